"""``--hpc-report DIR``: a scaling plot per workload and backend, a history trend plot, and a short
Markdown and HTML summary of every claim (figure, threshold, verdict) and of the gate."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import figures as keys
from ..gate.history import GateReport, Run
from .claims import ClaimRecord

# Once the page has loaded, the title says how many plots the browser could show (a test reads it).
IMAGES_CHECK = ("<script>addEventListener('load',()=>{const all=[...document.images];"
                "const shown=all.filter(i=>i.complete&&i.naturalWidth>0).length;"
                "document.title='pytest-hpcdemo report: '+shown+' of '+all.length+' plots shown'})</script>")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def scaling_series(run: Run) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The scaling points of a run (``extra_info["scaling"]``), by workload and backend."""
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for bench in run.benchmarks:
        point = (bench.get("extra_info") or {}).get(keys.SCALING)
        if point:
            series.setdefault((point["workload"], point["backend"]), []).append(point)
    return series


def timing_claim_rows(run: Run) -> list[tuple[str, str, str, str, str]]:
    """(test, measurement, figure with interval, threshold, verdict) for every timing claim."""
    rows = []
    for bench in run.benchmarks:
        claims = (bench.get("extra_info") or {}).get(keys.CLAIMS) or {}
        for name, figures in claims.items():
            for c in figures.get("claims", []):
                metric, _, threshold = c["claim"].partition(" ")
                figure = f"{metric} {c['median']:.3g} [{c['ci_low']:.3g}, {c['ci_high']:.3g}]"
                if math.isnan(c["median"]):
                    figure = f"{metric}: no round free of other processes' load (Claims: the loaded rounds)"
                rows.append((bench["fullname"], name, figure, threshold, c["verdict"]))
    return rows


def _interval(value: float, ci: Sequence[float] | None, digits: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return f"{value:{digits}}"
    return f"{value:{digits}} [{ci[0]:{digits}}, {ci[1]:{digits}}]"


def _of_ideal(p: dict[str, Any]) -> str:
    if "fraction_of_pool_ideal" not in p:
        return ""
    loaded = " (limits measured under load)" if p.get("limits_loaded") else ""
    return f"{p['fraction_of_pool_ideal']:.0%} of {p['pool_ideal']:.2f}x{loaded}"


def scaling_rows(series: dict[tuple[str, str], list[dict[str, Any]]]) -> list[tuple[str, ...]]:
    """(backend, workers, efficiency, speedup, share of the pool ideal, Karp-Flatt, note) per point,
    each with its interval."""
    rows: list[tuple[str, ...]] = []
    for (workload, backend), points in series.items():
        for p in sorted(points, key=lambda p: p["workers"]):
            rows.append((f"{backend} ({workload})", str(p["workers"]),
                         _interval(p.get("efficiency", math.nan), p.get("efficiency_ci")),
                         _interval(p["speedup"], p.get("ci")), _of_ideal(p),
                         # a serial fraction from loaded rounds is the load's, often above 1: not shown
                         "- (loaded)" if p.get("contested") else
                         _interval(p.get("karp_flatt", math.nan), p.get("karp_flatt_ci"), ".3f"),
                         "others took the cores" if p.get("contested") else ""))
    return rows


def memory_rows(run: Run) -> list[tuple[str, float, float]]:
    """(measurement, baseline MiB, candidate MiB) for every claim whose peak memory was recorded."""
    rows = []
    for bench in run.benchmarks:
        for name, figures in ((bench.get("extra_info") or {}).get(keys.CLAIMS) or {}).items():
            mem = figures.get("memory")
            if mem:
                rows.append((name, mem["baseline_peak_rss_bytes"] / 2**20,
                             mem["candidate_peak_rss_bytes"] / 2**20))
    return rows


def growth_cells(run: Run) -> dict[str, tuple[str, str]]:
    """Each claim's median growth of the peak during a call (what the gate compares), baseline and
    candidate, in MiB; "-" for runs saved before it was recorded."""
    from ..gate.history import median

    def cell(values: Sequence[float] | None) -> str:
        return f"{median(values) / 2**20:.1f}" if values else "-"

    cells = {}
    for bench in run.benchmarks:
        for name, figures in ((bench.get("extra_info") or {}).get("claims") or {}).items():
            mem = figures.get("memory") or {}
            cells[name] = (cell(mem.get("baseline_rss_growth_per_call")),
                           cell(mem.get("candidate_rss_growth_per_call")))
    return cells


def node_lines(run: Run) -> list[str]:
    """The fingerprint and the limits saved in this run's machine_info."""
    from ..node.fingerprint import line

    lines = []
    fp = run.machine_info.get(keys.FINGERPRINT)
    if fp:
        lines.append(line(fp))
        lines.append(f"Numba threading layer {fp.get('numba_threading_layer') or 'not used'}; "
                     f"MPI {fp.get('mpi_library') or 'not installed'}; "
                     f"GIL {'enabled' if fp.get('gil_enabled') else 'disabled'}")
    saved = run.machine_info.get(keys.LIMITS)
    if saved:
        from ..node.limits import Limits

        lines += Limits.from_dict(saved).lines()
    return lines


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cell(x) for x in row) + " |" for row in rows), ""]


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fit_cells(points: Sequence[dict[str, Any]]) -> tuple[str, str]:
    from ..node.scaling import amdahl_fit

    usable = [(p["workers"], p["speedup"], *(p.get("ci") or (math.nan, math.nan))) for p in points
              if not p.get("contested")]
    fit = amdahl_fit(usable)
    if fit is None:
        return "no point with several workers on a machine free enough", "0"
    return _interval(fit.fraction, (fit.low, fit.high), ".3f"), str(fit.points)


def write_report(folder: Path, current: Run, history: Sequence[Run], gate: GateReport | None,
                 claims: Sequence[ClaimRecord]) -> list[Path]:
    """Write the plots and the summary into ``folder``; the paths written, summary first."""
    from . import plots

    folder.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, Path]] = []
    notes: list[str] = []
    series = scaling_series(current)
    fits: list[Sequence[str]] = []
    try:
        for (workload, backend), points in series.items():
            title = f"{workload} on {backend}"
            path = folder / f"scaling-{_slug(workload)}-{_slug(backend)}.png"
            fraction = plots.scaling_plot(title, points, path)
            fit = (f"Amdahl serial fraction {fraction:.2f}" if fraction is not None
                   else "no Amdahl fit (no point with several workers on a machine free enough)")
            busy = sum(bool(p.get("contested")) for p in points)
            note = f"; {busy} of {len(points)} points measured while others took the cores" if busy else ""
            images.append((f"{title}: {fit}{note}", path))
            fits.append((title, *_fit_cells(points)))
        memory = memory_rows(current)
        if memory:
            path = folder / "memory.png"
            plots.memory_plot(memory, path)
            images.append(("peak resident memory of each claim's baseline and candidate", path))
        runs = [*history, current] if current.benchmarks else list(history)
        if len(runs) > 1:  # one run is no history
            path = folder / "history.png"
            plots.trend_plot(runs, path)
            images.append((f"history of {len(runs)} runs (the last is this one)", path))
    except RuntimeError as exc:  # matplotlib missing: the summary is still written
        notes.append(f"plots skipped: {exc}")

    growth = growth_cells(current)
    sections: list[tuple[str, Sequence[str], list[Sequence[str]]]] = [
        ("Node", ("fact",), [(text,) for text in node_lines(current)]),
        ("Claims", ("verdict", "claim", "figures and thresholds"),
         [((r.verdict or "not run"), r.nodeid, r.line or r.title) for r in claims]),
        ("Scaling", ("backend", "workers", "efficiency [interval]", "speedup [interval]",
                     "share of the process-pool ideal (whole node)", "Karp-Flatt serial fraction", "note"),
         list(scaling_rows(series))),
        ("Amdahl fits", ("series", "serial fraction [fits to the intervals' ends]", "points fitted"), fits),
        ("Memory", ("measurement", "peak RSS of the process tree, MiB: baseline", "candidate",
                    "growth during a call (median, gated), MiB: baseline", "candidate"),
         [(name, f"{b:.0f}", f"{c:.0f}", *growth.get(name, ("-", "-")))
          for name, b, c in memory_rows(current)]),
        ("Timing claims", ("test", "measurement", "figure [interval]", "threshold", "verdict"),
         list(timing_claim_rows(current))),
    ]
    if gate is not None:
        sections.append((f"Gate: {'FAILED' if gate.failed else 'passed'} against {gate.baseline.label}",
                         ("verdict", "series", "details"),
                         [(c.outcome.value, c.series.key, c.line().partition(": ")[2])
                          for c in gate.changes]))
        notes += [line for line in gate.lines() if line.startswith(("REFUSED", "FORCED", "NOTE", "FLAGGED"))]

    md = ["# pytest-hpcdemo report", "", *(f"> {n}" for n in notes), ""]
    body = ["<h1>pytest-hpcdemo report</h1>", *(f"<p><b>{html.escape(n)}</b></p>" for n in notes)]
    for title, header, rows in sections:
        if rows:
            md += [f"## {title}", "", *_markdown_table(header, rows)]
            body += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
    if images:
        md += ["## Plots", ""]
        body.append("<h2>Plots</h2>")
        for caption, path in images:
            md += [f"![{caption}]({path.name})", f"*{caption}*", ""]
            body.append(f"<figure><img src='{html.escape(path.name)}'><figcaption>{html.escape(caption)}"
                        "</figcaption></figure>")
    style = ("body{font:14px sans-serif;max-width:1200px;margin:1em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font:13px sans-serif;text-align:left}"
             "img{max-width:100%}")
    summary_md, summary_html = folder / "summary.md", folder / "summary.html"
    summary_md.write_text("\n".join(md) + "\n", encoding="utf-8")
    summary_html.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>pytest-hpcdemo report"
                            f"</title><style>{style}</style>{IMAGES_CHECK}</head><body>{''.join(body)}"
                            "</body></html>\n",
                            encoding="utf-8")
    return [summary_md, summary_html, *(p for _, p in images)]

