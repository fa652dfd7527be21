"""Host description and resident-memory readers, against fake /proc files where it matters."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sarvessel.runtime.bench.host import host_info, read_cpuinfo
from sarvessel.runtime.bench.memory import (
    RssSampler,
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak_rss,
)

X86 = """processor\t: 0
model name\t: Test CPU 9000
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni

processor\t: 1
model name\t: Test CPU 9000
physical id\t: 0
core id\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni

processor\t: 2
model name\t: Test CPU 9000
physical id\t: 0
core id\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni
"""

ARM = """processor\t: 0
BogoMIPS\t: 200.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
CPU part\t: 0xd03

processor\t: 1
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid
"""


def test_cpuinfo_x86_counts_physical_cores_and_reads_flags(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(X86)
    (tmp_path / "meminfo").write_text("MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    info = read_cpuinfo(tmp_path / "cpuinfo")
    assert info["model"] == "Test CPU 9000"
    assert info["physical_cores"] == 2  # two hyperthreads share core 0
    assert "avx512_vnni" in info["flags"]
    h = host_info(proc=tmp_path)
    assert h["simd"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]
    assert h["memory_gb"] == 15.6
    assert "numpy" in h["libraries"] and "onnxruntime" in h["libraries"]
    assert h["python"]


def test_cpuinfo_aarch64_features_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(ARM)
    info = read_cpuinfo(tmp_path / "cpuinfo")
    assert "asimd" in info["flags"] and info["model"] == "0xd03"
    assert read_cpuinfo(tmp_path / "nope") == {}
    assert host_info(proc=tmp_path / "nope")["cpu_model"] is None


def test_peak_rss_grows_with_an_allocation_and_resets() -> None:
    before = peak_rss_bytes()
    assert before > 10e6
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    assert peak_rss_bytes() >= before + 50e6 or peak_rss_bytes() > 64 * 2**20
    del big
    if reset_peak_rss():  # Linux >= 4.0: the peak falls back to the current RSS
        assert peak_rss_bytes() <= current_rss_bytes() + 8 * 2**20


def test_peak_rss_from_a_fake_status_file(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n")
    assert peak_rss_bytes(status=status) == 123456 * 1024
    assert current_rss_bytes(status=status) == 100000 * 1024
    assert current_rss_bytes(status=tmp_path / "missing") is None
    assert peak_rss_bytes(status=tmp_path / "missing") > 0  # getrusage fallback


def test_rss_sampler_records_over_time() -> None:
    with RssSampler(interval_s=0.01) as s:
        time.sleep(0.1)
    assert len(s.samples) >= 3
    assert s.max_bytes == max(b for _, b in s.samples) > 0
    ts = [t for t, _ in s.samples]
    assert ts == sorted(ts)
