"""The persistent child interpreter behind the GIL-off-against-on claims: protocol, failures, clean-up."""

from __future__ import annotations

import os
import time

import pytest

from pytest_hpcdemo.core.child_interpreter import ChildError, ChildInterpreter
from pytest_hpcdemo.core.hardware import gil_state


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_child_runs_work_on_request_and_ends_with_the_block() -> None:
    """The child reports this build's state, answers each request, and is reaped on exit."""
    free_threaded, _ = gil_state()
    with ChildInterpreter(gil=True) as child:
        assert child.free_threaded is free_threaded
        assert child.gil_enabled is True  # PYTHON_GIL=1, or a GIL build
        for threads in (1, 3):
            child.run(threads, 10_000)
        pid = child.pid
    assert pid is not None and _gone(pid)
    assert child.pid is None


def test_gil_off_child_has_the_gil_off_on_a_free_threaded_build() -> None:
    """PYTHON_GIL=0 switches the GIL off in the child, PYTHON_GIL=1 keeps it on: the same build."""
    if not gil_state()[0]:
        pytest.skip("needs a free-threaded CPython 3.13t+: build one with ci/build_freethreaded.sh")
    with ChildInterpreter(gil=False) as off, ChildInterpreter(gil=True) as on:
        assert (off.gil_enabled, on.gil_enabled) == (False, True)


def test_a_dead_child_fails_the_call_with_its_status() -> None:
    with ChildInterpreter(gil=True) as child:
        assert child.pid is not None
        os.kill(child.pid, 9)
        with pytest.raises(ChildError, match="exited with status -9"):
            child.run(1, 1000)


def test_a_child_that_does_not_answer_in_time_fails_and_is_stopped() -> None:
    """A call that outlives its timeout raises instead of hanging, and the child is still ended."""
    child = ChildInterpreter(gil=True, timeout_s=0.05)
    with child, pytest.raises(ChildError, match=r"did not answer within 0\.05 s"):
        child.run(1, 3_000_000)  # ~0.2-0.4 s of work
    assert child.pid is None


def test_a_call_outside_the_block_or_with_bad_sizes_is_refused() -> None:
    child = ChildInterpreter(gil=True)
    with pytest.raises(ChildError, match="not running"):
        child.run(1, 10)
    with child, pytest.raises(ValueError, match="threads must be >= 1"):
        child.run(0, 10)


def test_stop_kills_a_child_that_ignores_its_closed_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child still busy when stopped is killed after STOP_TIMEOUT_S, not waited for forever."""
    from pytest_hpcdemo.core import child_interpreter

    monkeypatch.setattr(child_interpreter, "STOP_TIMEOUT_S", 0.2)
    child = ChildInterpreter(gil=True, timeout_s=0.01)
    with child:
        pid = child.pid
        with pytest.raises(ChildError):
            child.run(1, 300_000_000)  # far longer than the stop timeout
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert pid is not None and _gone(pid)
