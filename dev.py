#!/usr/bin/env python3
"""The README's two commands: each makes the virtual environment if needed, installs, and runs.

    python3 dev.py bench   # the benchmarks: every claim measured, pytest-benchmark's table, history saved
    python3 dev.py test    # the whole test suite: the plugin's tests, the claims, xdist and MPI runs

Needs only Python 3.11+. Extra arguments after the command go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
EXTRAS = "all,dev"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
MPI_RANKS = 4
MPI_TIMEOUT_S = 900
NO_TESTS_COLLECTED = 5  # pytest's exit status when the selection is empty


def run(*cmd: str | Path) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def bootstrap() -> None:
    """Create .venv and install this project with its extras, again only when pyproject changes."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on whatever python3 is first)
        sys.exit(f"pytest-hpcdemo needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    stamp = VENV / ".hpcdemo-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted:
        return
    pip = (BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q")
    if run(*pip, "--upgrade", "pip") or run(
        *pip, "-e", f".[{EXTRAS}]", "--config-settings", "editable_mode=compat"
    ):
        sys.exit("installing pytest-hpcdemo into .venv failed (see pip's message above)")
    stamp.write_text(wanted)


def pytest(*args: str) -> int:
    return run(BIN / "python", "-m", "pytest", *args)


def bench(extra: list[str]) -> int:
    """The benchmarks, then the report (HTML with the plots) in hpc-report/ (git ignores it) and
    its path, unless --hpc-report names another folder."""
    folder = ROOT / "hpc-report"
    report = [] if any(a.startswith("--hpc-report") for a in extra) else ["--hpc-report", str(folder)]
    started = time.time()
    status = pytest("benchmarks", "--benchmark-autosave", "--benchmark-columns=min,median,max,rounds",
                    *report, *extra)
    page = folder / "summary.html"
    if report and page.exists() and page.stat().st_mtime >= started:  # this run's, not a stale one
        print(f"report: {page}", flush=True)
    return status


def mpi_pytest(*args: str) -> int:
    """pytest under the mpich wheel's mpirun on MPI_RANKS ranks; the plugin's per-test deadline ends
    a hung test, this timeout only a launcher that never starts."""
    cmd = [str(BIN / "mpirun"), "-n", str(MPI_RANKS), str(BIN / "python"), "-m", "pytest", *args]
    print("+", " ".join(cmd), flush=True)
    try:
        return subprocess.call(cmd, cwd=ROOT, timeout=MPI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"mpirun did not end within {MPI_TIMEOUT_S} s", file=sys.stderr)
        return 1


def test(extra: list[str]) -> int:
    steps = [
        ("tests", "benchmarks", *extra),  # everything, serially: timing claims included
        ("-n", "2", "-q", "benchmarks"),  # semantics under xdist; timing claims skip there
    ]
    failed = [" ".join(step) for step in steps if pytest(*step) != 0]
    mpi = ("-m", "mpi", "-q", *extra)  # the MPI chapter as the README runs it: mpirun -n 4 pytest -m mpi
    status = mpi_pytest(*mpi)
    if status != 0 and not (status == NO_TESTS_COLLECTED and extra):  # extra args may select no MPI test
        failed.append(f"-m mpi under mpirun -n {MPI_RANKS} " + " ".join(mpi[2:]))
    if failed:
        print("failed: pytest " + "; pytest ".join(failed), file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    commands = {"bench": bench, "test": test}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    bootstrap()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
