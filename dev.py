#!/usr/bin/env python3
"""The README's commands: each makes the virtual environment if needed, installs, and runs.

    python3 dev.py bench   # the benchmarks: every claim measured, pytest-benchmark's table, history saved
    python3 dev.py test    # the whole test suite: the plugin's tests, the claims, xdist and MPI runs
    python3 dev.py test-free-threaded  # the plugin's tests and the thread, pool, process and MPI
                                       # chapters on a free-threaded CPython (found, or built and cached)

Needs only Python 3.11+. Extra arguments after the command go to pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
FREE_THREADED_VENV = ROOT / ".venv-ft"
# No environment marker tells a free-threaded build apart (PEP 780's sys_abi_features is a draft;
# pip 26.3 has none), so the extras are picked here: `all` needs Ray and Numba, which publish no
# wheels for free-threaded CPython 3.13, and `dev` needs mypy, whose ast-serialize has none either
# (its sdist needs Rust and crates.io); the linters run on the GIL build's leg.
EXTRAS = "all,dev"
FREE_THREADED_EXTRAS = "all-free-threaded"
BUILD_FREE_THREADED = ROOT / "ci" / "build_freethreaded.sh"
# The chapters whose claims are about threads, pools, processes (and the plugin's own tests):
# Numba's and Ray's chapters skip there for want of wheels, and the MPI chapter runs under mpirun.
FREE_THREADED_SUITE = ("tests", "benchmarks/test_free_threading.py", "benchmarks/test_gil.py",
                       "benchmarks/test_pools.py", "benchmarks/test_multiprocessing.py",
                       # The gate's real A/B run (4 session pairs) is the main leg's: on 3.13t its
                       # sessions' medians scattered so widely that a 5x slow-down went undetected
                       # in 1 of 2 runs; the gate's statistics are interpreter-independent.
                       "--deselect",
                       "tests/test_continuous.py::test_a_real_run_flags_the_slowed_benchmark_of_the_revision_under_test")
MPI_RANKS = 4
MPI_TIMEOUT_S = 900
NO_TESTS_COLLECTED = 5  # pytest's exit status when the selection is empty


def run(*cmd: str | Path) -> int:
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT)


def bin_dir(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts" if os.name == "nt" else "bin")


def is_free_threaded(python: str | Path) -> bool:
    """Whether ``python`` was built with --disable-gil (asked of that interpreter)."""
    probe = "import sysconfig; print(int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))))"
    return subprocess.run([str(python), "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "1"


def bootstrap(venv_dir: Path = VENV, python: str | Path = sys.executable) -> Path:
    """Create ``venv_dir`` with ``python`` and install this project with the extras that interpreter
    can have, again only when pyproject or the interpreter changes. Returns the venv's bin dir."""
    if sys.version_info < (3, 11):  # noqa: UP036 (dev.py runs on whatever python3 is first)
        sys.exit(f"pytest-hpcdemo needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    bin_ = bin_dir(venv_dir)
    extras = FREE_THREADED_EXTRAS if is_free_threaded(python) else EXTRAS
    if not (bin_ / "python").exists():
        print(f"creating {venv_dir} with {python}", flush=True)
        if run(python, "-m", "venv", "--clear", venv_dir):
            sys.exit(f"creating {venv_dir} with {python} failed (see the message above)")
    stamp = venv_dir / ".hpcdemo-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + f"{extras} {python}".encode())
    if stamp.exists() and stamp.read_text() == wanted.hexdigest():
        return bin_
    # --prefer-binary: on a free-threaded build the newest NumPy/SciPy may be an sdist only (NumPy
    # 2.5 has no cp313t wheel); an older wheel installs in seconds, the sdist builds for many minutes.
    pip = (bin_ / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", "--prefer-binary")
    if run(*pip, "--upgrade", "pip") or run(
        *pip, "-e", f".[{extras}]", "--config-settings", "editable_mode=compat"
    ):
        sys.exit(f"installing pytest-hpcdemo into {venv_dir} failed (see pip's message above)")
    stamp.write_text(wanted.hexdigest())
    return bin_


def pytest(bin_: Path, *args: str) -> int:
    return run(bin_ / "python", "-m", "pytest", *args)


def bench(bin_: Path, extra: list[str]) -> int:
    """The benchmarks, then the report (HTML with the plots) in hpc-report/ (git ignores it) and
    its path, unless --hpc-report names another folder."""
    folder = ROOT / "hpc-report"
    report = [] if any(a.startswith("--hpc-report") for a in extra) else ["--hpc-report", str(folder)]
    started = time.time()
    status = pytest(bin_, "benchmarks", "--benchmark-autosave", "--benchmark-columns=min,median,max,rounds",
                    *report, *extra)
    page = folder / "summary.html"
    if report and page.exists() and page.stat().st_mtime >= started:  # this run's, not a stale one
        print(f"report: {page}", flush=True)
    return status


def mpi_pytest(bin_: Path, *args: str) -> int:
    """pytest under the mpich wheel's mpirun on MPI_RANKS ranks; the plugin's per-test deadline ends
    a hung test, this timeout only a launcher that never starts."""
    cmd = [str(bin_ / "mpirun"), "-n", str(MPI_RANKS), str(bin_ / "python"), "-m", "pytest", *args]
    print("+", " ".join(cmd), flush=True)
    try:
        return subprocess.call(cmd, cwd=ROOT, timeout=MPI_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"mpirun did not end within {MPI_TIMEOUT_S} s", file=sys.stderr)
        return 1


def run_steps(bin_: Path, steps: list[tuple[str, ...]], extra: list[str]) -> int:
    """pytest for each step, then the MPI chapter under mpirun; every step runs, failures are listed."""
    failed = [" ".join(step) for step in steps if pytest(bin_, *step) != 0]
    mpi = ("-m", "mpi", "-q", *extra)  # the MPI chapter as the README runs it: mpirun -n 4 pytest -m mpi
    status = mpi_pytest(bin_, *mpi)
    if status != 0 and not (status == NO_TESTS_COLLECTED and extra):  # extra args may select no MPI test
        failed.append(f"-m mpi under mpirun -n {MPI_RANKS} " + " ".join(mpi[2:]))
    if failed:
        print("failed: pytest " + "; pytest ".join(failed), file=sys.stderr)
    return 1 if failed else 0


# The lint environment's checks (tox -e lint), first in `test`: ruff, then mypy with pyproject's
# [tool.mypy] (the package, strict about its own hints, Any for backends without stubs).
LINT = (("ruff", "check", "pytest_hpcdemo", "benchmarks", "tests", "dev.py"), ("mypy",))


def lint(bin_: Path) -> list[str]:
    """Each check of LINT that fails."""
    return [" ".join(check) for check in LINT if run(bin_ / check[0], *check[1:]) != 0]


def test(bin_: Path, extra: list[str]) -> int:
    failed = lint(bin_)
    status = run_steps(bin_, [
        ("tests", "benchmarks", *extra),  # everything, serially: timing claims included
        ("-n", "2", "-q", "benchmarks"),  # semantics under xdist; timing claims skip there
    ], extra)
    if failed:
        print("failed: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed or status else 0


def free_threaded_python() -> str:
    """A free-threaded interpreter: this one, one on PATH, or the cached build (built if missing)."""
    if is_free_threaded(sys.executable):
        return sys.executable
    print(f"+ {BUILD_FREE_THREADED}", flush=True)
    found = subprocess.run(["bash", str(BUILD_FREE_THREADED)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = found.stdout.strip().splitlines()
    if found.returncode != 0 or not lines:
        sys.exit(f"no free-threaded CPython: {BUILD_FREE_THREADED.name} failed (see its message above)")
    return lines[-1]


def test_free_threaded(extra: list[str]) -> int:
    bin_ = bootstrap(FREE_THREADED_VENV, free_threaded_python())
    return run_steps(bin_, [(*FREE_THREADED_SUITE, *extra)], extra)


def main(argv: list[str]) -> int:
    commands = {"bench": bench, "test": test}
    if argv and argv[0] == "test-free-threaded":
        return test_free_threaded(argv[1:])
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](bootstrap(), argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
