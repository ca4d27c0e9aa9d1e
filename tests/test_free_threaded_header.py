"""The header on a free-threaded build: which backends it cannot have yet, instead of an install hint."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_hpcdemo.core import hardware
from pytest_hpcdemo.report.claims import header_lines


@pytest.fixture(scope="module")
def detected() -> hardware.Hardware:
    return hardware.detect("forkserver")


def lines_for(hw: hardware.Hardware, **changes: object) -> list[str]:
    return header_lines(dataclasses.replace(hw, numba=None, ray=None, **changes), "forkserver")


def test_free_threaded_313_says_ray_and_numba_have_no_wheels(detected: hardware.Hardware) -> None:
    lines = lines_for(detected, python="3.13.5", free_threaded_build=True, gil_enabled=False)
    for name in ("numba", "ray"):
        assert (f"hpcdemo: {name} missing: it publishes no wheels for free-threaded CPython 3.13.5 yet; "
                "its chapter runs on a GIL build") in lines


def test_numba_has_free_threaded_wheels_from_314(detected: hardware.Hardware) -> None:
    lines = lines_for(detected, python="3.14.2", free_threaded_build=True, gil_enabled=False)
    assert "hpcdemo: numba missing (pip install 'pytest-hpcdemo[numba]')" in lines
    assert any(line.startswith("hpcdemo: ray missing: it publishes no wheels") for line in lines)


def test_a_gil_build_gets_the_install_hint(detected: hardware.Hardware) -> None:
    lines = lines_for(detected, python="3.13.5", free_threaded_build=False, gil_enabled=True)
    assert "hpcdemo: numba missing (pip install 'pytest-hpcdemo[numba]')" in lines
    assert "hpcdemo: ray missing (pip install 'pytest-hpcdemo[ray]')" in lines
