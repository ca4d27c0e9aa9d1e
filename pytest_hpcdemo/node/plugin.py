"""The whole node: its fingerprint in the header and in ``machine_info``, the oversubscription
arithmetic in the header, and the ``machine_limits`` fixture (bandwidth and pure-Python rates,
measured once per session when first asked for) with its figures in the summary.

Only pytest and the standard library are imported here at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from ..core import usage
from ..core.session import hardware_of, options_of

if TYPE_CHECKING:
    from .limits import Limits

LIMITS_KEY = pytest.StashKey["Limits"]()


def demand_line(config: pytest.Config) -> str:
    from .oversubscription import Demand, library_threads

    hw = hardware_of(config)
    ranks = hw.mpi.local_size if hw.mpi is not None and hw.mpi.launched else 1
    demand = Demand(ranks, library_threads(hw.usable_cores), hw.usable_cores)
    note = "; claims that would oversubscribe are reported undecided" if demand.oversubscribed else ""
    return f"hpcdemo: threads: {demand.line()}{note}"


def node_lines(config: pytest.Config) -> list[str]:
    from .fingerprint import fingerprint, line

    return [f"hpcdemo: node: {line(fingerprint())}", demand_line(config)]


@pytest.hookimpl(tryfirst=True)  # pytest shows the lines of earlier hooks last: after the core header
def pytest_report_header(config: pytest.Config) -> list[str]:
    """The node's lines at the start of a session that opted in (as plugin.py's header)."""
    return node_lines(config) if usage.opted_in(config) else []


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    """Otherwise after collection, only in a session that uses us (else this module stepped aside)."""
    return [] if usage.opted_in(config) else node_lines(config)


@pytest.fixture(scope="session")
def machine_limits(pytestconfig: pytest.Config) -> Limits:
    """Memory bandwidth and pure-Python rate on one core and on every usable core, measured once."""
    from .limits import measure_limits

    hw = hardware_of(pytestconfig)
    limits = measure_limits(hw.usable_cores, options_of(pytestconfig).start_method, hw.memory_bytes)
    pytestconfig.stash[LIMITS_KEY] = limits
    return limits


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    limits = config.stash.get(LIMITS_KEY, None)
    if limits is not None:
        terminalreporter.section("hpcdemo machine limits (this session)")
        for text in limits.lines():
            terminalreporter.write_line(text)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    from ..core import figures
    from .fingerprint import fingerprint

    machine_info[figures.FINGERPRINT] = fingerprint()
    limits = config.stash.get(LIMITS_KEY, None)
    if limits is not None:
        machine_info[figures.LIMITS] = limits.as_dict()
