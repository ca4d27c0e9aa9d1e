"""A small git repository of CPU-bound pytest-benchmark benchmarks, two commits: ``HEAD~1`` the
base, ``HEAD`` the same benchmarks with some of them slowed by a factor (or none: an unchanged
pair that differs only in a comment). For the ``continuous`` command's tests, and rerunnable by
hand for its closing figures:

    python tests/bench_repo.py /tmp/bench24 --benchmarks 24 --slow 3 --factor 1.25
    cd /tmp/bench24 && python -m pytest_hpcdemo continuous HEAD~1 HEAD

Each benchmark times ``kernel(n)`` from the repository's own ``benchwork.py`` (a sum of squares,
about 1 ms), so a session measures the code of the revision it runs in.
"""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Sequence
from pathlib import Path

WORK = '''"""The benchmarked code: SIZES[i] is benchmark i's problem size."""

SIZES = {sizes!r}


def kernel(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
'''

BENCH = '''import pytest

import benchwork


@pytest.mark.parametrize("index", range({count}))
def test_kernel(benchmark, index):
    benchmark.extra_info["benchwork"] = benchwork.__file__
    benchmark(benchwork.kernel, benchwork.SIZES[index])
'''

BASE_SIZE = 20_000


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


def make_repo(path: Path, benchmarks: int = 24, slowed: Sequence[int] = (), factor: float = 1.25) -> Path:
    """The repository at ``path``: base commit, then head with ``slowed`` benchmarks ``factor``
    times the work."""
    path.mkdir(parents=True, exist_ok=True)
    _git(path, "init", "--quiet", "--initial-branch=main")
    _git(path, "config", "user.email", "bench@example.invalid")
    _git(path, "config", "user.name", "bench")
    (path / "test_bench.py").write_text(BENCH.format(count=benchmarks))
    (path / "pytest.ini").write_text("[pytest]\npython_files = test_bench.py\n")
    sizes = [BASE_SIZE] * benchmarks
    (path / "benchwork.py").write_text(WORK.format(sizes=sizes))
    _git(path, "add", ".")
    _git(path, "commit", "--quiet", "-m", "base")
    for i in slowed:
        sizes[i] = round(BASE_SIZE * factor)
    text = WORK.format(sizes=sizes) + f"# head: {sorted(slowed)} slowed {factor}x\n"
    (path / "benchwork.py").write_text(text)
    _git(path, "commit", "--quiet", "-am", "head")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", type=Path)
    p.add_argument("--benchmarks", type=int, default=24)
    p.add_argument("--slow", type=int, default=0, help="slow down this many benchmarks, spread out")
    p.add_argument("--factor", type=float, default=1.25)
    args = p.parse_args(argv)
    slowed = [round(i * args.benchmarks / args.slow) for i in range(args.slow)] if args.slow else []
    make_repo(args.path, args.benchmarks, slowed, args.factor)
    print(f"{args.path}: {args.benchmarks} benchmarks, slowed {slowed} by {args.factor}x in HEAD")


if __name__ == "__main__":
    main()
