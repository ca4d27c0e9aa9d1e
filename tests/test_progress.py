"""A long measurement shows its progress as pytest shows its own: live on a terminal without
changing what -v or -q leave on the screen, silent elsewhere, a periodic line with -v."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_hpcdemo.report import progress

ROOT = Path(__file__).resolve().parents[1]

# A claim decided after some rounds of real (slept) time, scripted so that it holds every time.
SLOW = """
import time
from pytest_hpcdemo.core.measure import Timing, at_least

def test_slow(speedup):
    def baseline(): pass

    def candidate(): pass

    def run(fn):
        time.sleep(0.02)
        return Timing(0.02 if fn is baseline else 0.01, 0.0, 0.0)

    speedup(baseline, candidate, [at_least("speedup", 1.3)], cores_needed=0, name="slow", run=run)
"""

ARGS = ("-p", "no:xdist", "-p", "no:cacheprovider", "--hpc-budget=0.3")


def screen(raw: str) -> tuple[list[str], list[int]]:
    """What a terminal shows after ``raw`` (backspaces move the cursor left, characters overwrite),
    and how far right the cursor went on each line (the live status included)."""
    lines: list[str] = []
    reach: list[int] = []
    line: list[str] = []
    col = widest = 0
    for ch in raw.replace("\r\n", "\n"):
        if ch == "\n":
            lines.append("".join(line).rstrip())
            reach.append(widest)
            line, col, widest = [], 0, 0
        elif ch == "\r":
            col = 0
        elif ch == "\b":
            col = max(0, col - 1)
        else:
            line[col:col + 1] = [ch] if col < len(line) else [*" " * (col - len(line)), ch]
            col += 1
            widest = max(widest, col)
    return [*lines, "".join(line).rstrip()], [*reach, widest]


def run_on_a_terminal(folder: Path, *args: str) -> str:
    """pytest in a pseudo-terminal of 120 columns; everything it wrote, control characters kept."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--color=no", *ARGS, *args], cwd=folder,
                            env=env, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    out = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    return out.decode(errors="replace")


@pytest.mark.parametrize("verbosity", ["-v", "-q"])
def test_a_terminal_sees_a_live_status_that_leaves_the_output_as_it_was(pytester: pytest.Pytester,
                                                                        verbosity: str) -> None:
    pytester.makeini("[pytest]\nhpcdemo = true\n")
    pytester.makepyfile(test_progress_tty=SLOW)
    raw = run_on_a_terminal(pytester.path, verbosity)
    assert " measuring slow: round " in raw and "speedup " in raw, raw  # it was shown ...
    shown, reach = screen(raw)
    assert not any("measuring" in line for line in shown), shown  # ... and erased
    start = "test_progress_tty.py::test_slow PASSED" if verbosity == "-v" else "."
    row = next(i for i, line in enumerate(shown) if line.startswith(start))
    assert reach[row] < 120, raw  # the status never wrapped the test's line (backspaces cannot undo that)


def test_not_a_terminal_stays_silent(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nhpcdemo = true\n")
    pytester.makepyfile(test_quiet=SLOW)
    result = pytester.runpytest(*ARGS)
    result.assert_outcomes(passed=1)
    assert "measuring" not in result.stdout.str()


def test_verbose_without_a_terminal_prints_a_periodic_line(pytester: pytest.Pytester) -> None:
    """-v: a "still measuring" line every PERIOD_S (shortened here), then pytest names the test
    again before its outcome, as after a live-log line."""
    pytester.makeini("[pytest]\nhpcdemo = true\n")
    pytester.makeconftest("""
import pytest
from pytest_hpcdemo.report import progress

@pytest.fixture(autouse=True)
def short_period(monkeypatch):
    monkeypatch.setattr(progress, "PERIOD_S", 0.05)
""")
    pytester.makepyfile(test_periodic=SLOW)
    result = pytester.runpytest(*ARGS, "-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "    still measuring test_periodic.py::test_slow slow: round *, speedup * >= 1.3, * s",
        "test_periodic.py::test_slow PASSED*"])
    quiet = pytester.runpytest(*ARGS, "-q")
    assert "still measuring" not in quiet.stdout.str()


def test_an_xdist_worker_shows_nothing() -> None:
    class Reporter:
        _tw = SimpleNamespace(_file=sys.stdout)

        def isatty(self) -> bool:
            return True

    plugins = SimpleNamespace(get_plugin=lambda name: Reporter() if name == "terminalreporter" else None)
    config = SimpleNamespace(workerinput={"workerid": "gw0"}, get_verbosity=lambda: 2, pluginmanager=plugins)
    shown = progress.Progress(config, "t::a", "x")  # type: ignore[arg-type]
    assert not shown.live and not shown.periodic
