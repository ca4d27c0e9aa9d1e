"""interrupts: SIGTERM ends a session as Ctrl-C does, and an interrupted session leaves nothing running.

CI systems stop a job with SIGTERM, whose default action kills pytest at once: no summary, and the
forkserver, pool workers and resource tracker of a process pool stay alive with their semaphores.
From configure to unconfigure this plugin's handler takes SIGTERM and SIGINT: it kills the process
pool workers this process started (a forked worker would inherit the handler and survive SIGTERM,
so they get SIGKILL; the pool's manager thread then ends and the forkserver and resource tracker
exit with this process), and raises KeyboardInterrupt in the main thread, so that pytest stops,
runs every teardown and sessionfinish (the Ray cluster is stopped, the MPI job ends), prints what
ran and exits with status 2. ``ray.init`` installs a SIGTERM handler of its own that calls
``sys.exit(15)`` inside the running test; ray_cluster puts this one back after it.

Under MPI a rank blocked in an MPI call never runs a Python signal handler; ``listen`` lets the MPI
watchdog thread learn of the signal anyway, through the interpreter's wakeup file descriptor.

Module-level imports: pytest and the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

from . import usage

SIGNALS = (signal.SIGINT, signal.SIGTERM)
INTERRUPTS_KEY = pytest.StashKey["Interrupts"]()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def kill_pool_workers() -> list[int]:
    """SIGKILL the live multiprocessing children of this process (process pool workers); their pids."""
    if "multiprocessing" not in sys.modules:  # no pool was ever made
        return []
    import multiprocessing

    killed = []
    for child in multiprocessing.active_children():
        try:
            child.kill()
        except (OSError, ValueError):  # gone meanwhile, or already closed
            continue
        killed.append(child.pid)
    return [pid for pid in killed if pid is not None]


class Interrupts:
    """The session's SIGINT/SIGTERM handler: what it replaced, and what it received."""

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.received: list[int] = []
        self.killed_workers: list[int] = []

    def install(self) -> bool:
        """Take SIGINT and SIGTERM (main thread only: signal handlers can be set nowhere else)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in SIGNALS:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self.handle)
        return True

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            if signal.getsignal(signum) == self.handle and handler is not None:
                signal.signal(signum, handler)
        self.previous.clear()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        self.killed_workers += kill_pool_workers()
        raise KeyboardInterrupt(f"{signal_name(signum)} received")

    def summary(self) -> str | None:
        if not self.received:
            return None
        names = ", then ".join(signal_name(s) for s in self.received)
        killed = ", ".join(map(str, self.killed_workers)) or "none"
        return f"hpcdemo: interrupted by {names}; multiprocessing children (pool workers) killed: {killed}"


def _install(config: pytest.Config) -> None:
    interrupts = Interrupts()
    if interrupts.install():
        config.stash[INTERRUPTS_KEY] = interrupts


def pytest_configure(config: pytest.Config) -> None:
    """At once in a session that opted in; a session that only uses our fixtures or markers gets the
    handler after collection, and one that uses nothing of ours never does (a good guest)."""
    if usage.opted_in(config):
        _install(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Called only while this module is registered: the session uses us (else it stepped aside)."""
    if INTERRUPTS_KEY not in session.config.stash:
        _install(session.config)


@pytest.hookimpl(trylast=True)  # after the other plugins' unconfigure, which may still be interrupted
def pytest_unconfigure(config: pytest.Config) -> None:
    interrupts = config.stash.get(INTERRUPTS_KEY, None)
    if interrupts is not None:
        interrupts.restore()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    interrupts = config.stash.get(INTERRUPTS_KEY, None)
    line = interrupts.summary() if interrupts is not None else None
    if line:
        terminalreporter.write_line(line)


class SignalListener:
    """Tells ``on_signal`` (in a thread of its own) of every SIGINT/SIGTERM, even while the main
    thread is blocked in C code and no Python handler can run: the interpreter's C-level handler
    writes the signal number to the wakeup file descriptor at once. Made in the main thread."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._read, write = os.pipe()
        os.set_blocking(write, False)
        self._write = write
        self._previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._on_signal = on_signal
        threading.Thread(target=self._run, name="hpcdemo-signal-listener", daemon=True).start()

    def _run(self) -> None:
        while data := os.read(self._read, 64):  # empty once close() closed the writing end
            for signum in data:
                if signum in SIGNALS:
                    self._on_signal(signum)
        os.close(self._read)

    def close(self) -> None:
        """Give the wakeup descriptor back (main thread)."""
        if signal.set_wakeup_fd(self._previous) == self._write:
            os.close(self._write)
