"""The performance gate inside a pytest run: ``--hpc-gate``, ``@pytest.mark.gate(...)``, the saved
runs (raw timings kept, saved exclusively) and their history, read for the gate and the report.

The baseline (and, for a report, the history) is read at start-up, before pytest-benchmark saves
this run: a corrupt or unreadable file ends the session there with a one-line error naming it, and
nothing is written. The verdicts come at the end, from history.py; a regression fails the session.
The report itself (``--hpc-report``) is report/plugin.py's. Only pytest and the standard library are
imported here at start-up.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from ..core.session import register_session, under_xdist
from ..core.usage import in_use
from ..report.plugin import reporting
from .options import DEFAULT_ALPHA, DEFAULT_BUSY_LOAD, DEFAULT_MIN_EFFECT, add_threshold_options

if TYPE_CHECKING:
    from .history import GateReport, Run, Thresholds

MARKER = (f"gate(min_effect={DEFAULT_MIN_EFFECT:g}, alpha={DEFAULT_ALPHA:g}, both=False, "
          f"busy_load={DEFAULT_BUSY_LOAD:g}): thresholds of the "
          "performance gate (--hpc-gate) for this test's time and speedups: a change fails only when "
          "larger than min_effect and significant at alpha; both=True fails improvements too; times "
          "taken while other processes used more than busy_load cores are not compared.")

BASELINE_KEY = pytest.StashKey["Run | None"]()
HISTORY_KEY = pytest.StashKey["list[Run]"]()
CURRENT_KEY = pytest.StashKey[dict[str, Any]]()  # this run's JSON, as pytest-benchmark saved it
THIS_RUN_KEY = pytest.StashKey["Run"]()
GATE_KEY = pytest.StashKey["GateReport | None"]()
RESULT_KEY = pytest.StashKey[list[str]]()  # the lines of the "hpcdemo gate" section


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hpcdemo")
    group.addoption("--hpc-gate", action="store_true",
                    help="fail the session on a significant performance change against a saved run "
                         "(the newest in --benchmark-storage unless --hpc-gate-baseline names one)")
    group.addoption("--hpc-gate-baseline", default=None, metavar="RUN",
                    help="gate against RUN (implies --hpc-gate): a history file, a run number or a "
                         "name prefix")
    add_threshold_options(group.addoption, "hpc-gate-")
    group.addoption("--hpc-gate-force", action="store_true",
                    help="gate even when the baseline's parallel stack differs in what changes results "
                         "(CPU model, cores, BLAS threads, MPI, Python, ...); the gate's lines say so")


def defaults_of(config: pytest.Config) -> Thresholds:
    from .history import Thresholds

    return Thresholds(config.getoption("hpc_gate_min_effect"), config.getoption("hpc_gate_alpha"),
                      config.getoption("hpc_gate_both"), config.getoption("hpc_gate_busy"))


def _gating(config: pytest.Config) -> bool:
    return bool(config.getoption("hpc_gate")) or config.getoption("hpc_gate_baseline") is not None


def _active(config: pytest.Config) -> bool:
    """Gate or report asked for, in the controlling process (xdist workers save nothing)."""
    return wants_raw_timings(config) and not under_xdist(config)


def wants_raw_timings(config: pytest.Config) -> bool:
    """Whether this run's saved JSON must keep every round's time (``stats.data``): the gate and the
    report read them."""
    return _gating(config) or reporting(config)


def _saving(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_autosave", False) or config.getoption("benchmark_save", None))


def _check_storage(config: pytest.Config) -> None:
    """The storage folder usable before any test runs: a one-line usage error otherwise."""
    from .history import check_folder, storage_path

    storage = str(config.getoption("benchmark_storage", ""))
    is_file_storage = "://" not in storage or storage.startswith("file://")
    if storage and is_file_storage and (_saving(config) or _active(config)):
        check_folder(storage_path(storage), "--benchmark-storage", write=_saving(config))


def _load_history(config: pytest.Config) -> None:
    """The history, the baseline, and a warning for each unreadable file that is skipped."""
    from .history import load_history, load_run, machine_id, resolve_one, saved_runs, storage_path

    storage = storage_path(str(config.getoption("benchmark_storage")))
    machine = machine_id()
    spec = config.getoption("hpc_gate_baseline")
    chosen = resolve_one(spec, storage, machine) if spec is not None else None
    history, warnings = load_history(saved_runs(storage, machine), keep=chosen)
    for warning in warnings:
        config.issue_config_time_warning(pytest.PytestWarning(f"hpcdemo gate: {warning}"), stacklevel=2)
    config.stash.setdefault(RESULT_KEY, []).extend(warnings)
    config.stash[HISTORY_KEY] = history
    if chosen is not None:
        config.stash[BASELINE_KEY] = load_run(chosen)
    elif _gating(config):
        config.stash[BASELINE_KEY] = history[-1] if history else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)
    if not (_saving(config) or wants_raw_timings(config)):
        return  # no folder to check, no history to read: a plain session imports none of the gate
    from .history import HistoryError

    try:
        _check_storage(config)
        if _active(config):
            _load_history(config)
    except HistoryError as exc:
        raise pytest.UsageError(str(exc)) from None
    if _gating(config) and not under_xdist(config):
        register_session(config, GateSession(config), SESSION_PLUGIN)


def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest-benchmark's file storage picks the next run number and then opens it for writing:
    two runs saving at once can take one number, and a full disk leaves a partial file. Its save
    is replaced by an exclusive, atomic one (gate.save_exclusive)."""
    if not _saving(session.config):
        return  # nothing will be saved: pytest-benchmark's save stays as it is, never called
    from ..core.benchmark_compat import benchmark_session

    storage = getattr(benchmark_session(session.config), "storage", None)
    if storage is None or type(storage).__name__ != "FileStorage":
        return

    def save(output_json: dict[str, Any], name: str) -> None:
        from pytest_benchmark.utils import safe_dumps

        from .history import save_exclusive

        path = save_exclusive(storage.get(name).parent, name,
                              safe_dumps(output_json, ensure_ascii=True, indent=4))
        storage.logger.info(f"Saved benchmark data in: {path}")

    storage.save = save


def gate_thresholds(marker: pytest.Mark) -> dict[str, Any]:
    """A ``@pytest.mark.gate(...)``'s keywords, checked; a UsageError names a bad one."""
    from .history import THRESHOLD_KEYS, Thresholds

    unknown = set(marker.kwargs) - set(THRESHOLD_KEYS)
    if marker.args or unknown:
        raise pytest.UsageError(f"@pytest.mark.gate takes {', '.join(THRESHOLD_KEYS)} keywords only; "
                                f"got {marker.args or ''}{sorted(unknown) or ''}")
    try:
        Thresholds().overridden(marker.kwargs)
    except (ValueError, TypeError) as exc:
        raise pytest.UsageError(f"@pytest.mark.gate: {exc}") from None
    return dict(marker.kwargs)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not in_use(config):  # a session that does not use us: the gate steps aside with the plugin
        return
    for item in items:
        marker = item.get_closest_marker("gate")
        if marker is not None:
            gate_thresholds(marker)  # checked once, here; pytest_runtest_call saves the values


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """A benchmark's saved figures get the foreign load during the test (other processes' CPU, in
    cores: the gate does not compare times taken on a busy machine) and a marked test's thresholds
    (so that ``compare`` applies them too)."""
    bench = getattr(item, "funcargs", {}).get("benchmark")
    if bench is None or not hasattr(bench, "extra_info"):
        return (yield)
    from ..core import figures
    from ..core.measure import foreign_load, system_busy_seconds, tree_cpu_seconds

    cpu0, busy0, t0 = tree_cpu_seconds(), system_busy_seconds(), time.perf_counter()
    try:
        return (yield)
    finally:
        wall = time.perf_counter() - t0
        busy1, cpu1 = system_busy_seconds(), tree_cpu_seconds()
        load = foreign_load(None if busy0 is None or busy1 is None else busy1 - busy0, cpu1 - cpu0, wall)
        if load is not None:
            bench.extra_info[figures.FOREIGN_LOAD] = round(load, 3)
            # Its own CPU use: a benchmark that waits is compared whatever the others' load.
            bench.extra_info[figures.OWN_CPU] = round((cpu1 - cpu0) / wall, 3)
        marker = item.get_closest_marker("gate")
        if marker is not None:
            bench.extra_info[figures.GATE] = dict(marker.kwargs)  # checked at collection


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    """Saved runs keep each benchmark's raw per-round timings: the gate's test needs them."""
    data = {b.fullname: list(b.stats.data) for b in benchmarks if b}
    for entry in output_json.get("benchmarks", []):
        stats = entry.get("stats")
        if isinstance(stats, dict) and "data" not in stats and entry.get("fullname") in data:
            stats["data"] = data[entry["fullname"]]
    config.stash[CURRENT_KEY] = output_json


def _current_json(config: pytest.Config) -> dict[str, Any]:
    """This run as pytest-benchmark writes it (taken when it saved, else made the same way)."""
    if CURRENT_KEY in config.stash:
        return config.stash[CURRENT_KEY]
    from ..core.benchmark_compat import benchmark_session

    session = benchmark_session(config)
    benchmarks = [b for b in getattr(session, "benchmarks", []) if b]
    if session is None or not benchmarks:
        return {"machine_info": {}, "benchmarks": []}
    return config.hook.pytest_benchmark_generate_json(
        config=config, benchmarks=benchmarks, include_data=True,
        machine_info=session.get_machine_info(), commit_info={},
    )


def this_run(config: pytest.Config) -> Run:
    """This run's series, read once for the gate and the report."""
    if THIS_RUN_KEY not in config.stash:
        from .history import run_from_json

        config.stash[THIS_RUN_KEY] = run_from_json(_current_json(config), "this run")
    return config.stash[THIS_RUN_KEY]


def history_of(config: pytest.Config) -> list[Run]:
    """The saved runs read at start-up (none unless the gate or the report asked for them)."""
    return config.stash.get(HISTORY_KEY, [])


def gate_result(config: pytest.Config) -> GateReport | None:
    """This run against the baseline, compared once (its lines join the gate's section); None when
    the gate is off or had nothing to compare."""
    if GATE_KEY not in config.stash:
        config.stash[GATE_KEY] = _gate(config, this_run(config)) if _gating(config) else None
    return config.stash[GATE_KEY]


def _gate(config: pytest.Config, current: Run) -> GateReport | None:
    from .history import compare

    baseline = config.stash.get(BASELINE_KEY, None)
    lines = config.stash.setdefault(RESULT_KEY, [])
    if baseline is None:
        lines.append("no saved baseline in --benchmark-storage for this machine: nothing to compare, "
                     "the gate passes (save one with --benchmark-autosave)")
        return None
    if not current.benchmarks:
        lines.append("no benchmark ran in this session: nothing to compare, the gate passes")
        return None
    result = compare(baseline, current, defaults_of(config), history_of(config),
                     force=config.getoption("hpc_gate_force"))
    lines.extend(result.lines())
    return result


SESSION_PLUGIN = "hpcdemo.gate_session"


class GateSession:
    """The gate of a session that asked for it (``--hpc-gate``): registered as a plugin only then,
    at configuration (core.session.register_session), so that its hooks need no "is the gate on"
    guard."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """The verdicts against the baseline: a regression fails the session."""
        config = self.config
        result = gate_result(config)
        strict_fail = (result is not None and result.mostly_not_compared
                       and config.getoption("hpc_strict", False))
        if strict_fail:
            config.stash.setdefault(RESULT_KEY, []).append(
                "--hpc-strict: most series were not compared: the gate fails")
        if result is not None and (result.failed or strict_fail) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)  # after the claims' summary
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """The gate's section: unreadable history files, the verdicts, the report's files (only a
    session that asked for the gate or the report has any)."""
    lines = config.stash.get(RESULT_KEY, [])
    if lines:
        terminalreporter.section("hpcdemo gate")
    for line in lines:
        terminalreporter.write_line(line)
