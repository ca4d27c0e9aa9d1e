"""core/procfs.py: the /proc and /sys readers read this very process, and say None for what is not
there instead of raising."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pytest_hpcdemo.core import procfs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")


def test_this_process_is_read(tmp_path: Path) -> None:
    fields = procfs.stat_fields(os.getpid())
    assert fields is not None and fields[0] in "RS" and int(fields[1]) == os.getppid()
    assert procfs.start_time(os.getpid()) == int(fields[19])
    assert os.getpid() in procfs.children()[os.getppid()]
    assert procfs.cpu_ticks(os.getpid()) >= 0
    ticks = procfs.system_cpu_ticks()
    assert ticks is not None and len(ticks) == 8 and sum(ticks) > 0
    assert isinstance(procfs.mapped_shared_memory(), set)
    assert procfs.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (procfs.status_kib(os.getpid(), "VmHWM") or 0) > 0 and (procfs.meminfo_kib("MemTotal") or 0) > 0
    assert (procfs.private_kib(os.getpid()) or 0) > 0 and "processor" in (procfs.cpuinfo() or "")
    assert procfs.own_cgroup_dirs()[-1] == procfs.SYS_CGROUP
    assert all(len(files) == 3 for files in procfs.cgroup_cpu_limits())
    assert procfs.smt_active() in ("0", "1", None)


def test_key_figures_are_read_from_kib_lines() -> None:
    text = "Name:\tpython\nVmHWM:\t  12345 kB\nRssAnon:\t 678 kB\n"
    assert procfs.kib_field(text, "VmHWM") == 12345 and procfs.kib_field(text, "RssAnon") == 678
    assert procfs.kib_field(text, "VmRSS") is None and procfs.kib_field(None, "VmHWM") is None


def test_what_is_not_there_is_none(tmp_path: Path) -> None:
    assert procfs.read(tmp_path / "missing") is None
    gone = 2**22 + 1  # above the kernel's largest pid
    assert procfs.stat_fields(gone) is None and procfs.start_time(gone) is None
    assert procfs.cpu_ticks(gone) == 0 and procfs.mapped_shared_memory(gone) == set()
    assert procfs.status_kib(gone, "VmHWM") is None and procfs.private_kib(gone) is None
    assert procfs.reset_peak(gone)  # a process gone meanwhile is no refusal
    assert procfs.cache_sizes(tmp_path / "missing") == []
