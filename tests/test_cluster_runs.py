"""Runs on simulated hosts (pytest_hpcdemo.cluster.runs): a Ray cluster that cannot come up in time
is skipped with the reason, never failed or hung, and its half-started node leaves nothing behind;
an inner run's outcomes and claim summary are read back whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_hpcdemo.cluster import runs, simhosts

REASON = simhosts.unavailable_reason()


def _naming(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_a_cluster_past_its_deadline_is_skipped_with_the_reason_and_leaves_nothing() -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'pytest-hpcdemo[ray]'")
    ray = runs.ray_executable()
    if ray is None:
        pytest.skip("no `ray` command beside this Python or on PATH")
    with simhosts.SimHosts(2) as hosts:
        expected = (r"the Ray node on simhost1 did not come up in 1 tries within 2 s "
                    r"\(load average [\d.]+\): `ray start` had not ended")
        with pytest.raises(pytest.skip.Exception, match=expected):
            runs.start_ray_nodes(hosts, ray, deadline_s=2.0)
        token = hosts.scratch / "ray_auth_token"
        assert len(token.read_text()) == 64 and token.stat().st_mode & 0o077 == 0  # the cluster's, ours only
    assert hosts.left_over == []
    assert not hosts.scratch.exists()
    assert _naming(str(hosts.scratch)) == []
    assert not {hosts.switch, *(h.netns for h in hosts)} & set(simhosts.our_namespaces())


INNER_SUMMARY = """\
================================ hpcdemo claims ================================
HOLDS        benchmarks/test_x.py::test_one
               4 tasks: 2 on node 0,
               2 on node 1
INCONCLUSIVE benchmarks/test_x.py::test_two
               a vs b: speedup 3.1 [2.0, 4.0] >= 2; 7 rounds;
               c vs d: speedup 1.1 [0.5, 3.0] <= 2; 7 rounds
claims: 1 holds, 1 inconclusive (noise)
"""


def test_an_inner_runs_wrapped_summary_lines_are_read_whole() -> None:
    run = runs.InnerRun(0, INNER_SUMMARY, {"test_one": runs.Outcome("passed"),
                                          "test_two": runs.Outcome("skipped", "noisy")})
    assert run.summary_line("test_one") == "test_one: 4 tasks: 2 on node 0, 2 on node 1"
    assert run.summary_line("test_three") == "test_three"
    expected = r"^on the simulated hosts: noisy \[all figures: a vs b: .*; c vs d: .* <= 2; 7 rounds\]$"
    with pytest.raises(pytest.skip.Exception, match=expected):
        run.mirror("test_two")
