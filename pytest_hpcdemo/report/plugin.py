"""The report inside a pytest run: ``--hpc-report DIR`` writes scaling and history plots and the
Markdown/HTML claim summary (html.py, plots.py) at the end of the session.

The folder is checked at start-up: one that cannot be written ends the session there with a
one-line error. The history and this run's series come from the gate's plugin (gate/plugin.py),
which reads the saved runs for the report too. Only pytest and the standard library are imported
here at start-up.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..core.session import register_session, under_xdist
from .options import add_report_option

SESSION_PLUGIN = "hpcdemo.report_session"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_report_option(parser.getgroup("hpcdemo").addoption,
                      "write scaling and history plots and a Markdown/HTML claim summary into DIR")


def reporting(config: pytest.Config) -> bool:
    """Whether this run asked for a report (None where this module is blocked: no option)."""
    return config.getoption("hpc_report", None) is not None


@pytest.hookimpl(trylast=True)  # after the gate's storage check
def pytest_configure(config: pytest.Config) -> None:
    if not reporting(config) or under_xdist(config):  # xdist workers write nothing
        return
    from ..gate.history import HistoryError, check_folder

    folder = Path(config.getoption("hpc_report"))
    try:
        check_folder(folder, "--hpc-report", write=True)
    except HistoryError as exc:
        raise pytest.UsageError(str(exc)) from None
    register_session(config, ReportSession(config, folder), SESSION_PLUGIN)


class ReportSession:
    """The report of a session that asked for one: registered as a plugin only then, at
    configuration (core.session.register_session), so that its hook needs no "is a report wanted"
    guard."""

    def __init__(self, config: pytest.Config, folder: Path) -> None:
        self.config = config
        self.folder = folder

    @pytest.hookimpl(trylast=True)  # after the gate's verdicts, which the report shows
    def pytest_sessionfinish(self) -> None:
        from ..core.session import claim_log, has_claims
        from ..gate.plugin import RESULT_KEY, gate_result, history_of, this_run
        from .html import write_report

        config = self.config
        claims = list(claim_log(config).records.values()) if has_claims(config) else []
        written = write_report(self.folder, this_run(config), history_of(config), gate_result(config), claims)
        config.stash.setdefault(RESULT_KEY, []).append(f"report: {', '.join(str(p) for p in written)}")
