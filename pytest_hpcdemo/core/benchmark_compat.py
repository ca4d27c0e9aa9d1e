"""pytest-benchmark, where this plugin goes past its public API: the one module that touches its
internals, checked against the versions below.

What is internal (no documentation promises it): ``BenchmarkFixture._mode`` and ``_make_stats``,
through which our own interleaved samples become a test's entry (the two calls ``pedantic`` makes),
and ``config._benchmarksession``, the session whose storage, machine info and saving switches the
gate and the MPI chapter use. What is public is imported, not copied: ``get_machine_id`` (the
storage sub-folder of this interpreter). A pytest-benchmark outside :data:`CHECKED` is a one-line
usage error the first time an internal is needed, not an AttributeError deep in a test.

Module-level imports: the standard library only (the gate imports :func:`machine_id` without pytest).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

# The releases whose internals were read for this module: >= the first, < the second (pyproject's
# dependency bound says the same). Checked: 5.1.0, 5.3.1.
CHECKED = ((5, 1), (6, 0))


class BenchmarkFixture(Protocol):
    """What this plugin uses of pytest-benchmark's ``benchmark`` fixture (public and internal)."""

    extra_info: dict[str, Any]
    disabled: bool
    _mode: str | None

    def __call__(self, function_to_benchmark: Callable[..., Any], *args: Any, **kwargs: Any) -> Any: ...

    def _make_stats(self, iterations: int) -> Any: ...


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


_checked: list[str] = []  # the version found compatible, once checked


def check_version(version: str | None = None) -> None:
    """A pytest.UsageError naming the installed and the checked versions when they differ."""
    if _checked and version is None:
        return
    if version is None:
        module = sys.modules.get("pytest_benchmark")
        if module is None:
            import pytest_benchmark as module
        version = str(getattr(module, "__version__", "0"))
    low, high = CHECKED
    if not low <= _release(version) < high:
        import pytest

        raise pytest.UsageError(
            f"pytest-hpcdemo uses internals of pytest-benchmark checked against versions "
            f"{'.'.join(map(str, low))} to below {'.'.join(map(str, high))}; {version} is installed: "
            f"pip install 'pytest-benchmark>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}'")
    _checked.append(version)


def record_samples(benchmark: BenchmarkFixture | None, samples: Sequence[float]) -> bool:
    """Store our own timed samples as this test's pytest-benchmark entry; False when the fixture
    was used already (by the test itself or an earlier claim), is absent, or is disabled.

    pytest-benchmark measures only what it runs itself; our rounds are interleaved with a baseline
    and adaptive in number, so we hand it the candidate's samples through the same two calls its
    ``pedantic`` mode makes (``_make_stats`` then ``update``).
    """
    if benchmark is None:
        return False
    check_version()
    if benchmark._mode:
        return False
    benchmark._mode = "hpcdemo measurement"  # used, even when --benchmark-disable drops the figures
    if benchmark.disabled or not samples:
        return False
    stats = benchmark._make_stats(1)
    for seconds in samples:
        stats.update(seconds)
    return True


def benchmark_session(config: Any) -> Any | None:
    """pytest-benchmark's session object of this pytest session (None without the plugin)."""
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        check_version()
    return session


def machine_id() -> str:
    """The sub-folder pytest-benchmark saves this interpreter's runs in: its own ``get_machine_id``."""
    from pytest_benchmark.utils import get_machine_id

    return str(get_machine_id())
