"""Plots of a run and its history: scaling (speedup against workers, the ideal line and an Amdahl
fit) and a trend over saved runs. Matplotlib is imported when a plot is drawn, never before."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..gate.history import DEFAULT_BUSY_LOAD, MEMORY, Run
from ..node.scaling import amdahl_fit, amdahl_speedup

MISSING = "matplotlib is not installed: pip install 'pytest-hpcdemo[report]'"


def amdahl_serial_fraction(points: Sequence[tuple[float, float]]) -> float | None:
    """Amdahl's serial fraction fitted to (workers, speedup) points (:func:`scaling.amdahl_fit`);
    None when no point has more than one worker."""
    fit = amdahl_fit([(int(n), s, math.nan, math.nan) for n, s in points])
    return None if fit is None else fit.fraction


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scaling_plot(title: str, scaling: Sequence[Mapping[str, Any]], path: Path) -> float | None:
    """Speedup against workers with its intervals, the ideal line and the Amdahl fit; returns f.

    ``scaling``: one ``extra_info["scaling"]`` per measured point (workers, speedup, ci, and whether
    other processes contested most of its rounds: drawn hollow, and left out of the fit).
    """
    plt = _pyplot()
    points = sorted((p["workers"], p["speedup"], *p.get("ci", (math.nan, math.nan)), bool(p.get("contested")))
                    for p in scaling)
    workers = [p[0] for p in points]
    fraction = amdahl_serial_fraction([(p[0], p[1]) for p in points if not p[4]])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    top = max(workers)
    ax.plot([1, top], [1, top], "--", color="grey", label="ideal (speedup = workers)")
    lows = [p[1] - p[2] if not math.isnan(p[2]) else 0 for p in points]
    highs = [p[3] - p[1] if not math.isnan(p[3]) else 0 for p in points]
    bars = ax.errorbar(workers, [p[1] for p in points], yerr=[lows, highs], fmt="-", capsize=4)
    colour = bars[0].get_color()
    for busy, label in ((False, "measured median (90% interval)"),
                        (True, "machine busy: other processes took the cores")):
        chosen = [p for p in points if p[4] is busy]
        if chosen:
            ax.plot([p[0] for p in chosen], [p[1] for p in chosen], "o", color=colour, zorder=3,
                    mfc="white" if busy else colour, label=label)
    if fraction is not None:
        grid = [1 + (top - 1) * i / 50 for i in range(51)]
        ax.plot(grid, [amdahl_speedup(fraction, n) for n in grid], ":", color="C3",
                label=f"Amdahl fit, serial fraction {fraction:.2f}")
    ax.set_xlabel("workers")
    ax.set_ylabel("speedup over serial")
    ax.set_xticks(workers)
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return fraction


def short_label(label: str) -> str:
    """``0003_<commit>_20261125_013148_...`` -> ``0003 11-25 01:31``; other labels unchanged."""
    found = re.match(r"(\d{4})_.*?_\d{4}(\d\d)(\d\d)_(\d\d)(\d\d)\d\d", label)
    return f"{found[1]} {found[2]}-{found[3]} {found[4]}:{found[5]}" if found else label


# Series a panel of the history plot names in its legend: those that moved most from the first run
# to the last; more would make the legend unreadable (a full run has a hundred series).
LABELLED_SERIES = 10


def trend_plot(runs: Sequence[Run], path: Path) -> None:
    """Each benchmark's median time relative to its first run, each claim's median metric
    (speedup, parallelism), and, where recorded, each claim's median peak RSS growth per call in
    MiB (the memory the gate compares), one panel each. Hollow markers: the machine was too busy
    for the gate to compare that run. Each panel's legend names the :data:`LABELLED_SERIES` that
    moved most."""
    plt = _pyplot()
    keys = {k: s.kind for run in runs for k, s in run.series.items() if s.samples}
    with_memory = MEMORY in keys.values()
    panels = 3 if with_memory else 2
    fig, axes = plt.subplots(panels, 1, figsize=(10, 3.2 * panels), sharex=True)
    times, ratios = axes[0], axes[1]
    drawn: dict[Any, list[tuple[float, str, list[tuple[int, float, bool]], float]]] = {}
    for key, kind in keys.items():
        points = [(i, s.median, bool(s.busy_reason(DEFAULT_BUSY_LOAD))) for i, run in enumerate(runs)
                  if (s := run.series.get(key)) is not None and s.samples]
        ax = times if kind == "time" else axes[2] if kind == MEMORY else ratios
        scale = points[0][1] if kind == "time" else 2**20 if kind == MEMORY else 1.0
        moved = abs(math.log(points[-1][1] / points[0][1])) if points[0][1] > 0 and points[-1][1] > 0 else 0.0
        drawn.setdefault(ax, []).append((moved, key.rpartition("::")[2], points, scale))
    for ax, series in drawn.items():
        series.sort(key=lambda s: -s[0])
        for rank, (_, label, points, scale) in enumerate(series):
            named = rank < LABELLED_SERIES  # the rest drawn faint and unlabelled: a legend must stay readable
            (line,) = ax.plot([p[0] for p in points], [p[1] / scale for p in points], "-",
                              label=label if named else None, color=None if named else "lightgrey",
                              zorder=2 if named else 1)
            for x, y, busy in points:
                ax.plot(x, y / scale, "o", color=line.get_color(), mfc="white" if busy else line.get_color(),
                        zorder=line.get_zorder())
        if len(series) > LABELLED_SERIES:
            ax.plot([], [], "-", color="lightgrey",
                    label=f"{len(series) - LABELLED_SERIES} more series, which moved less")
    times.axhline(1.0, color="grey", lw=0.8)
    times.set_ylabel("median time / first run's")
    ratios.set_ylabel("median of the claim's metric\n(speedup, parallelism)")
    if with_memory:
        axes[2].set_ylabel("median peak RSS growth\nper call, MiB")
    axes[-1].set_xticks(range(len(runs)))
    axes[-1].set_xticklabels([short_label(r.label) for r in runs], rotation=30, ha="right", fontsize="small")
    times.set_title("history of this machine's runs (hollow: machine busy, not compared)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def memory_plot(rows: Sequence[tuple[str, float, float]], path: Path) -> None:
    """Peak resident memory of each claim's baseline and candidate (MiB), one pair of bars a claim."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r[1] for r in rows], height=0.4, label="baseline", color="C0")
    ax.barh([y - 0.2 for y in ys], [r[2] for r in rows], height=0.4, label="candidate", color="C1")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r[0] for r in rows], fontsize="x-small")
    ax.invert_yaxis()
    ax.set_xlabel("peak resident memory of the process tree, MiB (sum of per-process peaks)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
