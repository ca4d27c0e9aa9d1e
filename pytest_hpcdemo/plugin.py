"""pytest hooks only: options, markers, report header, skips, the claim summary, machine_info.

A session that does not use the plugin (core/usage.py) gets none of it: after collection the plugin and
its chapter modules unregister themselves, so that its tests run as without them.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Generator

import pytest

from .core import markers, usage
from .core.options import number, positive_seconds
from .core.session import (
    OPTIONS_KEY,
    STRICT_KEY,
    Options,
    claim_log,
    hardware_of,
    has_claims,
    session_plugins,
    under_xdist,
)

_confidence = number("a probability", lambda v: 0.5 <= v < 1, "at least 0.5 and below 1")
_share = number("a share", lambda v: 0 <= v <= 1, "from 0 to 1")


# Modules with fixtures and hooks (options included) of their own, one per concern, registered with
# this plugin at start-up. Each keeps its module-level imports to pytest and the standard library.
# Keys: the names users block with ``-p no:hpcdemo.NAME``, kept from the flat layout; values: the
# modules, relative to this package.
CHAPTER_PLUGINS = {
    "fixtures": "core.fixtures",
    "mpi_plugin": "mpi.plugin",
    "numba_plugin": "numba.plugin",
    "ray_plugin": "ray.plugin",
    "gpu_plugin": "gpu.plugin",
    "gate_plugin": "gate.plugin",
    "report_plugin": "report.plugin",
    "pool_guard": "core.pool_guard",
    "interrupts": "core.interrupts",
    "node_plugin": "node.plugin",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Register the chapter modules as this plugin is registered, early enough for their options.

    Not through ``pytest_plugins``: pytest looks each of those names up among every installed
    distribution's entry points, which cost a plain ``--collect-only`` over 10% more time.
    """
    for name, module in CHAPTER_PLUGINS.items():
        plugin_name = f"hpcdemo.{name}"
        if pluginmanager.get_plugin(plugin_name) is None and not pluginmanager.is_blocked(plugin_name):
            pluginmanager.register(importlib.import_module(f"{__package__}.{module}"), plugin_name)

# fork and forkserver exist on POSIX only; spawn everywhere. Stated here rather than asked of
# multiprocessing, whose import would be the plugin's largest start-up cost.
START_METHODS = ("fork", "forkserver", "spawn") if os.name == "posix" else ("spawn",)
DEFAULT_START_METHOD = "forkserver" if os.name == "posix" else "spawn"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(usage.INI_NAME, usage.INI_HELP, type="bool", default=False)
    group = parser.getgroup("hpcdemo", "measured claims of the Python HPC guide")
    group.addoption("--hpc-budget", type=positive_seconds, default=3.0, metavar="SECONDS",
                    help="measurement time a claim gets before an undecided one is extended (3x at most) "
                         "and then reported inconclusive (default: 3)")
    group.addoption("--hpc-confidence", type=_confidence, default=0.9, metavar="P",
                    help="confidence of the interval a verdict needs, in [0.5, 1) (default: 0.9)")
    group.addoption("--hpc-start-method", choices=START_METHODS, default=DEFAULT_START_METHOD,
                    help="multiprocessing start method of process pools (default: forkserver; fork "
                         "breaks after Numba's OpenMP code ran)")
    group.addoption("--hpc-strict", action="store_true", dest="hpc_strict", default=False,
                    help="fail the session (exit status 1) when a claim stays inconclusive with its median "
                         "on the failing side of its bound, or too many claims stay undecided (for CI)")
    group.addoption("--hpc-strict-undecided", type=_share, default=0.25, metavar="SHARE",
                    help="with --hpc-strict, the largest share of claims that may stay undecided, "
                         "from 0 to 1 (default: 0.25)")


def pytest_configure(config: pytest.Config) -> None:
    markers.register(config)
    usage.opted_in(config)  # decided now, before the chapters ask
    config.stash[OPTIONS_KEY] = Options(
        budget_s=config.getoption("hpc_budget"),
        confidence=config.getoption("hpc_confidence"),
        start_method=config.getoption("hpc_start_method"),
        strict=config.getoption("hpc_strict"),
        strict_undecided=config.getoption("hpc_strict_undecided"),
    )



def _header(config: pytest.Config) -> list[str]:
    from .report.claims import header_lines

    return header_lines(hardware_of(config), config.getoption("hpc_start_method"))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The machine, at the start of a session that opted in; otherwise after collection, and only
    when a test uses the plugin."""
    return _header(config) if usage.opted_in(config) else []


# A test that takes one of these fixtures measures time: it is a timing test, marked or not.
TIMING_FIXTURES = frozenset({"speedup", "gpu_benchmark", "mpi_benchmark"})
CLAIM_FIXTURES = TIMING_FIXTURES | {"claim"}  # a test that takes one is on the claim summary


def _step_aside(config: pytest.Config) -> None:
    """Unregister this plugin, its chapter modules (their fixtures stay defined) and the chapters'
    session objects: nothing of ours runs in the tests of a session that does not use us."""
    manager = config.pluginmanager
    names = [f"hpcdemo.{name}" for name in CHAPTER_PLUGINS if name != "fixtures"]
    for name in [*names, *session_plugins(config)]:
        plugin = manager.get_plugin(name)
        if plugin is not None:
            manager.unregister(plugin)
    manager.unregister(sys.modules[__name__])


@pytest.hookimpl(tryfirst=True)  # before the chapters' hooks, which ask usage.in_use
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    opted_in = usage.opted_in(config)
    names = markers.decide_names(config, opted_in)
    used = opted_in or usage.any_item_uses_us(items, names)
    config.stash[usage.IN_USE_KEY] = used
    if not used:
        _step_aside(config)
        return
    for item in items:
        if not TIMING_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.hpc_timing)


@pytest.hookimpl(tryfirst=True)  # the machine first, then the chapters' lines
def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    return [] if usage.opted_in(config) else _header(config)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not markers.needs(item):
        return
    reason = markers.skip_reason(item, hardware_of(item.config), under_xdist(item.config))
    if reason:
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    claim_test = not CLAIM_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
    if report.when == "setup" and report.skipped and claim_test:
        from .report.claims import (
            docstring_title,  # a claim skipped before it opened (missing hardware): not run
        )

        claim_log(item.config).open(item.nodeid, docstring_title(getattr(item, "function", None)))
    if not has_claims(item.config):
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else ""
        from .report.claims import error_of

        claim_log(item.config).settle(item.nodeid, report.outcome, reason, error_of(report, call.excinfo))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    from .core.session import strict_failure

    if strict_failure(session.config) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's table: the run ends with the claims
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not has_claims(config):
        return
    from .report.terminal import claim_lines

    log = claim_log(config)
    terminalreporter.section("hpcdemo claims")
    for line in claim_lines(log.records.values()):
        terminalreporter.write_line(line)
    terminalreporter.write_line(log.count_line())
    if STRICT_KEY in config.stash:
        terminalreporter.write_line(config.stash[STRICT_KEY], red=True, bold=True)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, object]) -> None:
    from .core import figures
    from .report.claims import hardware_info

    figures.stamp(machine_info)
    machine_info[figures.HARDWARE] = hardware_info(hardware_of(config))
