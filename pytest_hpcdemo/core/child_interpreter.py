"""A persistent child interpreter that runs CPU-bound pure-Python work on request, in N threads.

Two of them, one started with ``PYTHON_GIL=1`` and one with ``PYTHON_GIL=0``, let one session
compare the same free-threaded build with the GIL on and off. The child is started once and then
told "run N threads of size S" over a pipe, so interpreter start-up stays out of every timing; it
answers when the work is done. The parent side is :class:`ChildInterpreter`; the child side is
:func:`main` (``python -m pytest_hpcdemo.core.child_interpreter``). Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from types import TracebackType

READY, DONE = "ready", "done"
START_TIMEOUT_S = 60.0  # a loaded machine can take seconds to start an interpreter; never forever
STOP_TIMEOUT_S = 5.0


class ChildError(RuntimeError):
    """The child failed to start, died, or did not answer in time."""


def run_threads(threads: int, size: int) -> None:
    """``workloads.cpu_bound(size)`` in each of ``threads`` threads (in this thread when 1)."""
    from pytest_hpcdemo.core import workloads

    if threads == 1:
        workloads.cpu_bound(size)
        return
    workers = [threading.Thread(target=workloads.cpu_bound, args=(size,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def main() -> int:
    """The child: announce the GIL state, then run each "THREADS SIZE" line read from stdin."""
    import sysconfig

    from pytest_hpcdemo.core import workloads  # noqa: F401 (imported before the GIL state is reported)

    is_enabled = getattr(sys, "_is_gil_enabled", None)
    gil = True if is_enabled is None else bool(is_enabled())
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    print(f"{READY} free_threaded={int(free_threaded)} gil={int(gil)}", flush=True)
    for line in sys.stdin:
        try:
            threads, size = (int(v) for v in line.split())
        except ValueError:
            print(f"error: expected 'THREADS SIZE', got {line.strip()!r}", flush=True)
            return 2
        run_threads(threads, size)
        print(DONE, flush=True)
    return 0  # stdin closed: the parent is done (or gone)


class ChildInterpreter:
    """This interpreter (``sys.executable``) in a child process with ``PYTHON_GIL`` set.

    Use as a context manager: the child is stopped (stdin closed, then killed if it does not end
    within STOP_TIMEOUT_S) whatever happens. ``timeout_s`` bounds every answer, so a child that
    hangs or dies fails the call instead of the session.
    """

    def __init__(self, gil: bool, timeout_s: float = 120.0) -> None:
        self.gil_requested = gil
        self.timeout_s = timeout_s
        self.gil_enabled: bool | None = None
        self.free_threaded: bool | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending = b""

    def __enter__(self) -> ChildInterpreter:
        env = dict(os.environ, PYTHON_GIL="1" if self.gil_requested else "0")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_hpcdemo.core.child_interpreter"], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
        )
        try:
            answer = self._read_line(START_TIMEOUT_S)
            words = dict(w.split("=", 1) for w in answer.split()[1:] if "=" in w)
            if not answer.startswith(READY) or set(words) != {"free_threaded", "gil"}:
                raise ChildError(f"child interpreter sent {answer!r} instead of {READY!r}")
            self.free_threaded, self.gil_enabled = words["free_threaded"] == "1", words["gil"] == "1"
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def run(self, threads: int, size: int) -> None:
        """Run ``cpu_bound(size)`` in ``threads`` threads in the child; return when it is done."""
        if threads < 1 or size < 0:
            raise ValueError(f"threads must be >= 1 and size >= 0, got {threads} and {size}")
        proc = self._running()
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{threads} {size}\n".encode())
        except BrokenPipeError:
            raise ChildError(self._death_note()) from None
        answer = self._read_line(self.timeout_s)
        if answer != DONE:
            raise ChildError(f"child interpreter answered {answer!r} instead of {DONE!r}")

    def stop(self) -> None:
        """End the child: close its stdin (it leaves its loop), kill it if it lingers, reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ChildError("child interpreter is not running (use it as a context manager)")
        return self._proc

    def _read_line(self, timeout_s: float) -> str:
        proc = self._running()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise ChildError(f"child interpreter (pid {proc.pid}) did not answer within {timeout_s:g} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise ChildError(self._death_note())
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _death_note(self) -> str:
        proc = self._running()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"child interpreter (pid {proc.pid}) closed its output but did not exit"
        assert proc.stderr is not None
        lines = proc.stderr.read().decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "no message"
        return f"child interpreter exited with status {proc.returncode}: {last}"


if __name__ == "__main__":
    sys.exit(main())
