"""numba: the fork trap, and the threading layer Numba used in pytest-benchmark's machine_info.

The fork trap: once Numba's ``omp`` threading layer (GNU OpenMP on Linux) has run parallel code,
a process forked from this one aborts as soon as it runs parallel code itself ("fork() called from
a process already using GNU OpenMP"), and its pool breaks. The default start method, forkserver,
forks from a clean server process and is safe. Under ``--hpc-start-method=fork`` the plugin selects
Numba's ``forksafe`` layer (TBB when installed, else workqueue) unless NUMBA_THREADING_LAYER is set;
if it names a layer that may be GNU OpenMP, the Numba tests are skipped with the reason instead.
"""

from __future__ import annotations

import os
import sys

import pytest

from ..core.markers import marker
from ..core.session import register_session

LAYER_VAR = "NUMBA_THREADING_LAYER"
FORK_SAFE_LAYER = "forksafe"
# Layers that are, or may pick, GNU OpenMP: Numba's "default" tries tbb, then omp.
FORK_UNSAFE_LAYERS = ("default", "omp", "threadsafe") if sys.platform.startswith("linux") else ()


def fork_trap_reason(start_method: str, layer: str) -> str | None:
    """Why Numba tests cannot run with this start method and threading layer, or None."""
    if start_method != "fork" or layer.lower() not in FORK_UNSAFE_LAYERS:
        return None
    return (f"--hpc-start-method=fork with {LAYER_VAR}={layer}: a process forked after Numba's GNU "
            f"OpenMP code ran aborts when it runs parallel code; use --hpc-start-method=forkserver "
            f"(the default), or {LAYER_VAR}={FORK_SAFE_LAYER}, or leave {LAYER_VAR} unset")


def pytest_configure(config: pytest.Config) -> None:
    # Set before Numba is imported (never at start-up), which reads the variable at import.
    if config.getoption("hpc_start_method") == "fork" and LAYER_VAR not in os.environ:
        os.environ[LAYER_VAR] = FORK_SAFE_LAYER
        register_session(config, ForkSafeLayer(), "hpcdemo.numba_session")


class ForkSafeLayer:
    """The session that set NUMBA_THREADING_LAYER (``--hpc-start-method=fork``, the variable unset):
    registered as a plugin only then (core.session.register_session), so that its unconfigure needs
    no "did we set it" guard."""

    def pytest_unconfigure(self) -> None:
        os.environ.pop(LAYER_VAR, None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if marker(item, "numba"):
        reason = fork_trap_reason(item.config.getoption("hpc_start_method"),
                                  os.environ.get(LAYER_VAR, "default"))
        if reason:
            pytest.skip(reason)


@pytest.hookimpl(trylast=True, optionalhook=True)  # after plugin.py has filled in machine_info["hpcdemo"]
def pytest_benchmark_update_machine_info(machine_info: dict[str, object]) -> None:
    from ..core import figures
    from ..core.hardware import numba_threading_layer_used

    info = machine_info.setdefault(figures.HARDWARE, {})
    if isinstance(info, dict):
        info["numba_threading_layer_used"] = numba_threading_layer_used()
