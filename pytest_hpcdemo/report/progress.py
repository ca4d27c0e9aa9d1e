"""Progress of a long measurement, shown the way pytest shows its own ("collecting ..." is
rewritten in place on a terminal, and printed as lines elsewhere only with -v):

* on a terminal: a live status after the test's name, rewritten after every round and erased
  when the measurement ends, so that what pytest writes next (``PASSED``, a dot) lands where it
  would have: -v and -q output read as without it;
* not a terminal: nothing, unless -v, when a measurement still running after ``PERIOD_S`` says so
  on a line of its own every ``PERIOD_S``, ``still measuring <test> <claim>: round 12, speedup
  1.84 [1.61, 2.02] >= 1.35, 10 s`` (pytest then repeats the test's name before its outcome, as
  after a live-log line);
* an xdist worker: nothing (its output is not shown, and timing claims skip there).

pytest-benchmark shows nothing while it measures; pyperf prints a dot per value with -v. Only
pytest and the standard library are imported here.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import IO, TYPE_CHECKING, Any

import pytest

from ..core.session import under_xdist

if TYPE_CHECKING:
    from ..core.measure import Measurement

PERIOD_S = 10.0  # -v without a terminal: a line when a measurement has run this long, and again
MIN_WIDTH = 16  # columns left on the test's line below which the live status is not shown


def status(m: Measurement) -> str:
    """``round 12, speedup 1.84 [1.61, 2.02] >= 1.35, 8 s``: each claim's figure so far."""
    decisions = m.decisions if m.clean_rounds else m._decide(m.rounds)
    figures = "; ".join(f"{d.claim.metric} {d.median:.2f} "
                        + (f"[{d.low:.2f}, {d.high:.2f}] " if d.interval else "(no interval yet) ")
                        + f"{d.claim.op} {d.claim.threshold:.3g}" for d in decisions)
    return f"round {len(m.rounds)}, {figures}, {m.elapsed_s:.0f} s"


class Progress:
    """Called with the measurement after each round; :meth:`close` erases the live status."""

    def __init__(self, config: pytest.Config, nodeid: str, name: str) -> None:
        self.nodeid, self.name = nodeid, name
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        self.reporter: Any = None if under_xdist(config) else reporter
        self.capture: Any = capture
        self.file: IO[str] | None = getattr(getattr(reporter, "_tw", None), "_file", None)
        self.live = self.reporter is not None and bool(self.reporter.isatty()) and self.file is not None
        self.periodic = self.reporter is not None and not self.live and config.get_verbosity() >= 1
        self.shown = 0  # characters of the live status on the screen now
        self.next_line_s = PERIOD_S

    def _terminal(self) -> Any:
        """Out of pytest's output capture while writing (as its live logging does)."""
        return self.capture.global_and_fixture_disabled() if self.capture is not None else nullcontext()

    def __call__(self, m: Measurement) -> None:
        if self.live:
            tw = self.reporter._tw
            room = tw.fullwidth - tw.width_of_current_line - 1
            text = f" measuring {self.name}: {status(m)}"[:room] if room >= MIN_WIDTH else ""
            self._show(text)
        elif self.periodic and m.elapsed_s >= self.next_line_s:
            self.next_line_s = m.elapsed_s + PERIOD_S
            with self._terminal():
                self.reporter.write_line(f"    still measuring {self.nodeid} {self.name}: {status(m)}")

    def _show(self, text: str) -> None:
        """Replace what is shown by ``text``, the cursor left where the test's line ended."""
        if not text and not self.shown:
            return
        assert self.file is not None
        out = "\b" * self.shown + text.ljust(self.shown) + "\b" * max(0, self.shown - len(text))
        with self._terminal():
            self.file.write(out)
            self.file.flush()
        self.shown = len(text)

    def close(self) -> None:
        """Erase the live status: the cursor is back where pytest left it."""
        if self.live and self.shown:
            assert self.file is not None
            with self._terminal():
                self.file.write("\b" * self.shown + " " * self.shown + "\b" * self.shown)
                self.file.flush()
            self.shown = 0
