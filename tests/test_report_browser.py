"""The HTML report as a person sees it: written from a synthetic run with scaling points, memory
figures, the fingerprint and the limits, then opened in headless Chromium, which must show every
plot and every section."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from pytest_hpcdemo.gate import history
from pytest_hpcdemo.node import scaling
from pytest_hpcdemo.report.claims import ClaimRecord
from pytest_hpcdemo.report.html import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--virtual-time-budget=5000",
)
TIMEOUT_S = 90


def chromium() -> str:
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found is None:
        pytest.skip("headless Chromium is not installed: apt-get install -y chromium (Debian's package)")
    return found


def point_bench(backend: str, workers: int, efficiency: float) -> dict:
    point = scaling.Point(workers, efficiency, (efficiency * 0.95, efficiency * 1.03))
    name = f"{backend} x{workers}: efficiency"
    return {
        "fullname": f"benchmarks/test_scaling.py::test_{backend}[x{workers}]",
        "stats": {"data": [0.1, 0.1]},
        "extra_info": {
            "scaling": {"workload": "pure-Python CPU-bound", "backend": backend, **point.as_dict()},
            "claims": {
                name: {
                    "baseline_s": [0.1, 0.1],
                    "candidate_s": [0.1 / efficiency] * 2,
                    "memory": {
                        "baseline_peak_rss_bytes": 80 * 2**20,
                        "candidate_peak_rss_bytes": (80 + 15 * workers) * 2**20,
                    },
                    "claims": [
                        {
                            "claim": "speedup >= 0.675",
                            "median": efficiency,
                            "ci_low": efficiency * 0.95,
                            "ci_high": efficiency * 1.03,
                            "verdict": "holds",
                        }
                    ],
                }
            },
        },
    }


def synthetic_run(label: str = "this run") -> history.Run:
    benches = [point_bench("processes", n, 1 / (0.1 * n + 0.9)) for n in scaling.points(16)]
    machine_info = {
        "hpcdemo_fingerprint": {
            "cpu_model": "AMD EPYC",
            "physical_cores": 16,
            "logical_cores": 32,
            "smt": True,
            "numa_nodes": 2,
            "governor": "performance",
            "blas": [{"internal_api": "openblas", "num_threads": 16}],
            "numba_threading_layer": "omp",
            "mpi_library": "MPICH 5.0.2",
            "gil_enabled": True,
        },
        "hpcdemo_limits": {
            "processes": 16,
            "copy_one": 12e9,
            "triad_one": 11e9,
            "copy_all": 80e9,
            "triad_all": 75e9,
            "python_one": 5e6,
            "python_all": 76e6,
            "elements_one": 2**24,
            "elements_all": 2**21,
            "foreign_load": 0.1,
            "pool_ideal": 15.2,
        },
    }
    return history.run_from_json({"machine_info": machine_info, "benchmarks": benches}, label)


def run_browser(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Chromium in its own process group, killed whole if it outlives the timeout."""
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_report_shows_every_plot_and_section_in_chromium(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the report's plots need: pip install 'pytest-hpcdemo[report]'")
    pytest.importorskip("scipy", reason="the Amdahl fit needs: pip install 'pytest-hpcdemo[report]'")
    browser = chromium()
    claims = [
        ClaimRecord("benchmarks/test_scaling.py::test_processes[x16]", "", "speedup 0.61 >= 0.36", "holds")
    ]
    earlier = synthetic_run("0001_earlier")
    written = write_report(tmp_path / "report", synthetic_run(), [earlier], None, claims)
    html = written[1]
    pngs = [p for p in written if p.suffix == ".png"]
    assert [p.name for p in pngs] == [
        "scaling-pure-python-cpu-bound-processes.png",
        "memory.png",
        "history.png",
    ]
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = run_browser([*common, "--dump-dom", html.as_uri()], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>pytest-hpcdemo report: 3 of 3 plots shown</title>" in dom.stdout
    for section in ("Node", "Claims", "Scaling", "Amdahl fits", "Memory", "Plots"):
        assert f"<h2>{section}</h2>" in dom.stdout
    assert "16 physical / 32 logical cores, SMT on, 2 NUMA node(s)" in dom.stdout
    assert "process-pool ideal 15.20x" in dom.stdout
    assert re.search(r"<td>0\.100 \[0\.0\d\d, 0\.1\d\d\]</td>", dom.stdout), "the Amdahl fit is missing"
    shot = tmp_path / "report.png"
    result = run_browser(
        [*common, f"--screenshot={shot}", "--window-size=1280,2400", html.as_uri()], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
