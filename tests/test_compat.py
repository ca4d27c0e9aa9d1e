"""The adapters for other projects' internals (core/benchmark_compat.py, ray/_private_compat.py):
the installed versions pass their checks, others are a one-line usage error naming the bounds, and
public helpers are the other project's own."""

from __future__ import annotations

import pytest

from pytest_hpcdemo.core import benchmark_compat
from pytest_hpcdemo.gate import history
from pytest_hpcdemo.ray import _private_compat


def test_installed_pytest_benchmark_is_in_the_checked_range() -> None:
    import pytest_benchmark

    benchmark_compat.check_version(pytest_benchmark.__version__)


@pytest.mark.parametrize("version", ["4.0.0", "5.0.9", "6.0.0", "7.1"])
def test_pytest_benchmark_outside_the_range_is_a_usage_error(version: str) -> None:
    with pytest.raises(pytest.UsageError) as info:
        benchmark_compat.check_version(version)
    message = str(info.value)
    assert f"{version} is installed" in message and "pytest-benchmark>=5.1,<6" in message
    assert "\n" not in message


def test_machine_id_is_pytest_benchmarks_own() -> None:
    from pytest_benchmark.utils import get_machine_id

    assert history.machine_id() == benchmark_compat.machine_id() == get_machine_id()


@pytest.mark.parametrize("version, ok", [("2.40.0", True), ("2.60.0", True), ("2.39.1", False),
                                         ("3.0.0", False)])
def test_ray_versions_are_checked(version: str, ok: bool) -> None:
    if ok:
        _private_compat.check_version(version)
        return
    with pytest.raises(pytest.UsageError, match=rf"Ray {version} is installed: pip install 'ray>=2.40,<3.0'"):
        _private_compat.check_version(version)
