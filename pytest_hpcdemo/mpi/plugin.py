"""mpi: ``mpirun -n N pytest -m mpi`` as typed, with one report, agreed outcomes and no hangs.

Under an MPI launcher (or with ``--with-mpi``) every rank runs the same session: only rank 0 prints
and saves benchmarks; each test phase's outcome is exchanged on a private communicator so that a
failure on any rank fails the test on all, and rank 0 shows it; a watchdog aborts the job when a test
runs past its deadline. All of this only in a session that opted in (core/usage.py: this repository's
ini, ``-o hpcdemo=true``, or one of our options): there pytest-mpi, when installed, is told that MPI
tests are enabled, and this plugin decides which run and says why the others skip. Elsewhere
pytest-mpi's ``--with-mpi``, markers and ``mpi_tmp_path`` are exactly its own.

Module-level imports: pytest and the standard library (``pytest_hpcdemo.mpi.session`` is stdlib-only).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pytest

from ..core.options import positive_seconds
from ..core.session import register_session, under_xdist
from ..core.usage import has_pytest_mpi, in_use, opted_in
from .launch import launch_of, yield_when_idle

if TYPE_CHECKING:  # the session module itself only under a launcher
    from ..core.benchmark_compat import BenchmarkFixture
    from .session import MpiBenchmark, MpiSession

SESSION_KEY = pytest.StashKey["MpiSession | None"]()
HOSTS_KEY = pytest.StashKey[list[tuple[str, int]]]()  # each rank's (host, usable cores)
SESSION_PLUGIN = "hpcdemo.mpi_session"
DEFAULT_DEADLINE_S = 60.0  # for mpi_benchmark tests only, whose rounds --hpc-budget bounds


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hpcdemo")
    group.addoption("--mpi-deadline", type=positive_seconds, default=None, metavar="SECONDS",
                    help="under MPI, a test running longer dumps every thread's stack and aborts the "
                         "job; the marker mpi(deadline=S) overrides it (default: none; 60 for "
                         "mpi_benchmark tests)")
    if importlib.util.find_spec("pytest_mpi") is None:  # else pytest-mpi's own option, same meaning
        group.addoption("--with-mpi", action="store_true", default=False,
                        help="run as an MPI session under a launcher this plugin does not recognise")


def session_of(config: pytest.Config) -> MpiSession | None:
    return config.stash.get(SESSION_KEY, None)


def _start_session(config: pytest.Config) -> MpiSession | None:
    launch = launch_of(os.environ)
    with_mpi = getattr(config.option, "with_mpi", False)  # ours where pytest-mpi is not installed
    if not opted_in(config) and not (with_mpi and not has_pytest_mpi(config)):
        return None
    if launch is None and not with_mpi:
        return None
    if under_xdist(config):  # a pytest-xdist worker of a rank is not a rank itself
        return None
    from ..core.hardware import detect_cached

    cores = detect_cached(config.getoption("hpc_start_method")).usable_cores
    oversubscribed = launch is not None and launch.local_size > cores
    if oversubscribed:
        yield_when_idle(os.environ)  # before MPI starts
    from .session import MpiSession

    try:
        return MpiSession(launch.launcher if launch else "--with-mpi", oversubscribed,
                          config.getoption("mpi_deadline") or DEFAULT_DEADLINE_S, config.option.basetemp)
    except ImportError:
        raise pytest.UsageError("an MPI launcher started this pytest but mpi4py is not installed: "
                                "pip install 'pytest-hpcdemo[mpi]'") from None


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path factory and terminal reporter are made
def pytest_configure(config: pytest.Config) -> None:
    if opted_in(config) or not has_pytest_mpi(config):
        config.pluginmanager.register(SharedTmpPath(), "hpcdemo-mpi-tmp-path")
    session = _start_session(config)
    config.stash[SESSION_KEY] = session
    if session is None:
        return
    config.option.basetemp = str(session.rank_tmp)
    config.stash[HOSTS_KEY] = _hosts_of_ranks(session, config)
    stdout = None
    if session.rank != 0:  # the terminal reporter writes nowhere: rank 0 reports for all
        stdout = sys.stdout
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the reporter keeps it for the session)
    register_session(config, MpiSessionPlugin(session, stdout), SESSION_PLUGIN)


def _hosts_of_ranks(session: MpiSession, config: pytest.Config) -> list[tuple[str, int]]:
    from mpi4py import MPI

    from ..core.hardware import detect_cached

    mine = (MPI.Get_processor_name(), detect_cached(config.getoption("hpc_start_method")).usable_cores)
    return session.collective("the hosts of the ranks", lambda: session.comm.allgather(mine))


def _spans(ranks: Sequence[int]) -> str:
    """0, 1, 2, 5 -> '0-2, 5'."""
    spans: list[list[int]] = []
    for rank in ranks:
        if spans and rank == spans[-1][1] + 1:
            spans[-1][1] = rank
        else:
            spans.append([rank, rank])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def hosts_line(hosts: Sequence[tuple[str, int]]) -> str:
    """The header's line of ranks by host, from each rank's (host, usable cores) in rank order."""
    by_host: dict[str, tuple[list[int], int]] = {}
    for rank, (host, cores) in enumerate(hosts):
        by_host.setdefault(host, ([], cores))[0].append(rank)
    parts = [f"{host}: rank{'s' if len(ranks) > 1 else ''} {_spans(ranks)} on {cores} usable "
             f"core{'s' if cores != 1 else ''}" for host, (ranks, cores) in by_host.items()]
    return f"hpcdemo: mpi ranks by host ({len(by_host)} host{'s' if len(by_host) > 1 else ''}): " \
        + "; ".join(parts)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    only_mpi = getattr(config.option, "only_mpi", False)
    if opted_in(config) and hasattr(config.option, "with_mpi") and not only_mpi:
        config.option.with_mpi = True  # pytest-mpi: MPI tests are enabled; this plugin skips with reasons


# Here rather than on MpiSessionPlugin: pytest shows the header hooks' lines in the order their
# plugins were registered, and this module's place (before the suite's conftest files) is kept.
def pytest_report_header(config: pytest.Config) -> list[str]:
    """Rank 0's header under a launcher: ranks by host (ranks and usable cores), then rank -> host:pid."""
    session = session_of(config)
    hosts: list[tuple[str, int]] | None = config.stash.get(HOSTS_KEY, None)
    lines = [hosts_line(hosts)] if hosts is not None else []
    return [*lines, session.ranks_line()] if session is not None else lines


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """MPI tests that cannot run get a skip marker with the reason (pytest-mpi's is never added:
    it is told MPI tests are enabled)."""
    from ..core.markers import mpi_marker_is_ours

    if not in_use(config) or not mpi_marker_is_ours(config):
        return
    marked = [(item, marker) for item in items if (marker := item.get_closest_marker("mpi"))]
    if not marked:
        return
    from ..core.markers import mpi_skip_reason
    from ..core.session import hardware_of

    mpi = session_of(config)
    for item, marker in marked:
        _deadline(item)  # a bad deadline is a usage error now, not in the middle of the run
        reason = mpi_skip_reason(marker, hardware_of(config).mpi, mpi.size if mpi else None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _deadline(item: pytest.Item) -> float | None:
    """The marker's deadline, else --mpi-deadline, else the default for an ``mpi_benchmark`` test;
    None (no deadline) for any other test, so that a long test of a user's is never aborted."""
    marker = item.get_closest_marker("mpi")
    value = marker.kwargs.get("deadline") if marker else None
    if value is None:
        option = item.config.getoption("mpi_deadline")
        if option is not None:
            return float(option)
        return DEFAULT_DEADLINE_S if "mpi_benchmark" in getattr(item, "fixturenames", ()) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise pytest.UsageError(f"@pytest.mark.mpi(deadline=...) takes seconds > 0, got {value!r}")
    return float(value)


def _text(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    return report.longreprtext if report.failed else ""


def _agree(mpi: MpiSession, report: pytest.TestReport) -> None:
    """Every rank ends the phase with the worst outcome of any rank (failed, then skipped)."""
    gathered = mpi.gather_outcome(report.outcome, _text(report), f"{report.nodeid} ({report.when})")
    failed = [(rank, text) for rank, (outcome, text) in enumerate(gathered) if outcome == "failed"]
    skipped = [(rank, text) for rank, (outcome, text) in enumerate(gathered) if outcome == "skipped"]
    if [rank for rank, _ in failed] == [mpi.rank]:  # this rank's own report, as pytest made it
        report.sections.append(("MPI", f"failed on rank {mpi.rank} of {mpi.size} only"))
    elif failed:
        by_text: dict[str, list[str]] = {}
        for rank, text in failed:
            by_text.setdefault(text, []).append(str(rank))
        sections = [f"{'_' * 30} rank {', '.join(ranks)} {'_' * 30}\n{text}"
                    for text, ranks in by_text.items()]
        report.outcome = "failed"
        report.longrepr = "\n".join([f"failed on rank {', '.join(str(r) for r, _ in failed)} of {mpi.size}",
                                     *sections])
    elif skipped and not failed and not report.skipped:
        rank, reason = skipped[0]
        path, lineno, _ = report.location
        report.outcome = "skipped"
        report.longrepr = (path, (lineno or 0) + 1, f"skipped on rank {rank} of {mpi.size}: {reason}")


class MpiSessionPlugin:
    """The hooks of an MPI session (under a launcher, or ``--with-mpi``): registered as a plugin only
    then, at configuration (core.session.register_session), so that they need no "under MPI?" guard.
    ``stdout``: on a rank other than 0, sys.stdout while the terminal reporter is made."""

    def __init__(self, mpi: MpiSession, stdout: TextIO | None) -> None:
        self.mpi = mpi
        self.stdout = stdout

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.stdout is not None:
            sys.stdout = self.stdout
        from ..core.benchmark_compat import benchmark_session

        benchmarks = benchmark_session(session.config)
        if self.mpi.rank != 0 and benchmarks is not None:
            benchmarks.disabled = True  # rank 0 alone saves pytest-benchmark's entries
            benchmarks.save = benchmarks.autosave = benchmarks.json = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        mismatch = self.mpi.collection_mismatch([item.nodeid for item in session.items], session.testsfailed)
        if mismatch is not None:  # on ranks other than 0 an error that prints nothing
            raise pytest.UsageError(*[mismatch] if mismatch else [])

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        seconds = _deadline(item)
        if seconds is None:
            return (yield)
        with self.mpi.watchdog.armed(seconds, f"{item.nodeid} ran past its deadline of {seconds:g} s "
                                              "(--mpi-deadline, or the marker mpi(deadline=S))"):
            return (yield)

    @pytest.hookimpl(wrapper=True, trylast=True)  # innermost: the other wrappers see the agreed report
    def pytest_runtest_makereport(self) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if self.mpi.size > 1:
            _agree(self.mpi, report)
        return report

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        session.exitstatus = self.mpi.agree_exitstatus(session.exitstatus)  # every rank exits alike
        return (yield)

    def pytest_unconfigure(self) -> None:
        self.mpi.close()


# ---------------------------------------------------------------------------------------------
# Fixtures


def _mpi4py_or_skip() -> Any:
    try:
        from mpi4py import MPI
    except ImportError:
        pytest.skip("mpi4py is not installed: pip install 'pytest-hpcdemo[mpi]'")
    return MPI


@pytest.fixture
def comm() -> Iterator[Any]:
    """A fresh duplicate of COMM_WORLD for this test (its messages match no other test's)."""
    dup = _mpi4py_or_skip().COMM_WORLD.Dup()
    yield dup
    dup.Free()


class SharedTmpPath:
    """Holds ``mpi_tmp_path``; registered at configure, after pytest-mpi, so that this one is used
    rather than pytest-mpi's fixture of the same name."""

    @pytest.fixture
    def mpi_tmp_path(self, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
        """One directory shared by every rank of this test (``tmp_path`` is each rank's own)."""
        mpi = session_of(request.config)
        if mpi is None:
            return tmp_path
        return mpi.shared_dir(re.sub(r"[^\w.-]", "_", request.node.name)[:60])


@pytest.fixture
def mpi_benchmark(request: pytest.FixtureRequest, benchmark: BenchmarkFixture) -> Iterator[MpiBenchmark]:
    """``mpi_benchmark(fn, name=...)`` times ``fn`` on every rank (same rounds, barrier before each,
    slowest rank's time); ``mpi_benchmark.compare(baseline, candidate, claims, name=...)`` asserts
    ratio claims. Saved as this test's pytest-benchmark entry by rank 0."""
    from ..core.fixtures import open_claim
    from ..core.session import claim_log, hardware_of, options_of
    from .session import MpiBenchmark

    MPI = _mpi4py_or_skip()
    mpi = session_of(request.config)
    dup = MPI.COMM_WORLD.Dup()
    cores = hardware_of(request.config).usable_cores
    run = {"size": dup.Get_size(), "launcher": mpi.launcher if mpi else None,
           "oversubscribed": mpi.oversubscribed if mpi else False, "usable_cores": cores,
           "mpi_library": MPI.Get_library_version().splitlines()[0].strip()}
    open_claim(request)
    options = options_of(request.config)
    yield MpiBenchmark(dup, benchmark, request.node.nodeid, claim_log(request.config),
                       options.confidence, options.budget_s, run)
    dup.Free()
