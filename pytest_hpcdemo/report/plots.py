"""Plots of a run and its history: scaling (speedup against workers, the ideal line and an Amdahl
fit) and a trend over saved runs. Matplotlib is imported when a plot is drawn, never before."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..gate.history import DEFAULT_BUSY_LOAD, Run
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


def trend_plot(runs: Sequence[Run], path: Path) -> None:
    """Each benchmark's median time relative to its first run, and each claim's median speedup.
    Hollow markers: the machine was too busy for the gate to compare that run."""
    plt = _pyplot()
    fig, (times, ratios) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    keys = {k: s.kind for run in runs for k, s in run.series.items() if s.samples}
    for key, kind in keys.items():
        points = [(i, s.median, bool(s.busy_reason(DEFAULT_BUSY_LOAD))) for i, run in enumerate(runs)
                  if (s := run.series.get(key)) is not None and s.samples]
        ax = times if kind == "time" else ratios
        scale = points[0][1] if kind == "time" else 1.0
        (line,) = ax.plot([p[0] for p in points], [p[1] / scale for p in points], "-",
                          label=key.rpartition("::")[2])
        for x, y, busy in points:
            ax.plot(x, y / scale, "o", color=line.get_color(), mfc="white" if busy else line.get_color())
    times.axhline(1.0, color="grey", lw=0.8)
    times.set_ylabel("median time / first run's")
    ratios.set_ylabel("median speedup")
    ratios.set_xticks(range(len(runs)))
    ratios.set_xticklabels([short_label(r.label) for r in runs], rotation=30, ha="right", fontsize="small")
    times.set_title("history of this machine's runs (hollow: machine busy, not compared)")
    for ax in (times, ratios):
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
