"""The machine's own limits, measured in this session (``machine_limits``): memory bandwidth with
a STREAM-style copy and triad in NumPy, and the pure-Python rate, each on one core and on every
usable core at once; their ratio for pure Python is the process-pool ideal.

These are not the guide's claims but the yardsticks for them: the scaling study states its
speedup as a fraction of the pool ideal, and the summary and the report give the figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_hpcdemo.node.limits import Limits


def test_machine_limits_are_measured(machine_limits: Limits, hardware, claim) -> None:
    """Memory bandwidth and the pure-Python rate, one core and all: measured, finite and positive,
    on every usable core."""
    claim("; ".join(machine_limits.lines()))
    assert machine_limits.processes == hardware.usable_cores
    figures = machine_limits.as_dict()
    for key in ("copy_one", "triad_one", "copy_all", "triad_all", "python_one", "python_all", "pool_ideal"):
        assert math.isfinite(figures[key]) and figures[key] > 0, f"{key} = {figures[key]}"
