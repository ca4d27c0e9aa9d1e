"""The plugin costs nothing when unused (ours, not the guide's): heavy backends are imported only
by the tests that need them, so collecting an unrelated suite is as fast as without the plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_hpcdemo.measure import at_most

MODULES, TESTS_PER_MODULE = 20, 10


def write_plain_suite(root: Path) -> None:
    for m in range(MODULES):
        body = "".join(f"def test_{t}():\n    assert {t} == {t}\n\n" for t in range(TESTS_PER_MODULE))
        (root / f"test_plain_{m}.py").write_text(body)


def collect_only(root: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                    *extra], cwd=root, check=True, capture_output=True, timeout=120)


def test_collect_only_costs_within_five_percent(speedup, tmp_path: Path) -> None:
    """``pytest --collect-only`` of a plain 200-test suite uses at most 5% more CPU time with the
    plugin than with ``-p no:hpcdemo`` (the CPU time of the pytest process, paired per round)."""
    write_plain_suite(tmp_path)
    speedup(lambda: collect_only(tmp_path), lambda: collect_only(tmp_path, "-p", "no:hpcdemo"),
            [at_most("cpu_speedup", 1.05)], cores_needed=1, budget_factor=3.0,
            name="collect-only CPU: with plugin / without")
