"""The gate's options and their defaults, defined once for the pytest plugin (``--hpc-gate-*``)
and the command line (``compare``, ``continuous``), as pytest-benchmark's
``add_*_options`` serve its plugin and its CLI: each ``add_*`` takes the ``addoption`` of a pytest
option group or the ``add_argument`` of an argparse parser, and a prefix for the names.

Standard library and core/options.py only: the plugin imports it at every start-up.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.options import AddOption, number, percent_or_fraction

# Against saved history (--hpc-gate, compare): a change must exceed 5% of the median.
DEFAULT_MIN_EFFECT = 0.05
# continuous compares fresh sessions pair by pair, whose drift on a shared machine is larger.
CONTINUOUS_MIN_EFFECT = 0.10
DEFAULT_ALPHA = 0.01  # the chance of any false alarm over a run's family of series
# Cores' worth of CPU other processes may take during a benchmark before its times say more about
# them than about the code: such a run is not compared (``extra_info["foreign_load"]``).
DEFAULT_BUSY_LOAD = 0.5

# Each threshold's valid values, stated once: for the options here and for gate.history.Thresholds
# (a marker's and a saved run's values). A median cannot fall by 100%: a larger minimum effect would
# silently stop the gating of claims.
BOUNDS: dict[str, tuple[Callable[[float], bool], str]] = {
    "min_effect": (lambda v: 0 <= v < 1, "a fraction in [0, 1) (under 100%)"),
    "alpha": (lambda v: 0 < v < 0.5, "a probability above 0 and below 0.5"),
    "busy_load": (lambda v: v >= 0, "a number of cores >= 0"),
}

fraction = number("a fraction such as 0.05 or 5%", *BOUNDS["min_effect"], parse=percent_or_fraction)
probability = number("a probability", *BOUNDS["alpha"])
cores = number("cores", *BOUNDS["busy_load"])


def add_threshold_options(addoption: AddOption, prefix: str = "", *,
                          min_effect: float = DEFAULT_MIN_EFFECT, busy: bool = True) -> None:
    """``--{prefix}min-effect``, ``--{prefix}alpha``, ``--{prefix}both`` and (``busy``)
    ``--{prefix}busy``: when a change fails (gate.history.Thresholds)."""
    addoption(f"--{prefix}min-effect", type=fraction, default=min_effect, metavar="FRACTION",
              help=f"smallest relative change of a median that can fail the gate (default: {min_effect:g})")
    addoption(f"--{prefix}alpha", type=probability, default=DEFAULT_ALPHA, metavar="P",
              help=f"chance of any false alarm over the whole run (default: {DEFAULT_ALPHA:g})")
    addoption(f"--{prefix}both", action="store_true",
              help="fail on significant improvements too (a stale baseline)")
    if busy:
        addoption(f"--{prefix}busy", type=cores, default=DEFAULT_BUSY_LOAD, metavar="CORES",
                  help=f"do not compare times taken while other processes used more than CORES cores' "
                       f"worth of CPU (default: {DEFAULT_BUSY_LOAD:g})")

