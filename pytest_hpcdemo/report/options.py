"""The report's option, defined once for the pytest plugin and the ``continuous`` command (as
gate/options.py defines the gate's): ``add_report_option`` takes the ``addoption`` of a pytest option
group or the ``add_argument`` of an argparse parser.

Standard library and core/options.py only: the plugin imports it at every start-up.
"""

from __future__ import annotations

from ..core.options import AddOption


def add_report_option(addoption: AddOption, help: str) -> None:
    """``--hpc-report DIR``, the same name in a run and in ``continuous``."""
    addoption("--hpc-report", default=None, metavar="DIR", help=help)
