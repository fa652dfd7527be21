"""What machine a benchmark ran on: CPU model, cores, instruction-set flags, memory, load and
library versions, so a figure can be compared with another only where the machine agrees.

Read from ``/proc`` on Linux (x86 ``flags``, aarch64 ``Features``); elsewhere the fields that
cannot be read are ``None``. Nothing here imports a library to learn its version
(:mod:`importlib.metadata` reads the installed distributions).
"""

from __future__ import annotations

import logging
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LIBRARIES", "SIMD_FLAGS", "host_info", "load_average", "read_cpuinfo"]

#: Distributions whose versions a report lists (those installed).
LIBRARIES = ("sarvessel", "numpy", "scipy", "tifffile", "onnxruntime", "pillow", "onnx", "torch",
             "brevitas", "finn-plus", "finn-plus-driver", "pynq")
#: Instruction-set flags that decide onnxruntime's kernels, shown first in reports.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
              "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8",
              "asimd", "asimddp", "sve", "i8mm")


def host_info(*, proc: Path = Path("/proc")) -> dict[str, Any]:
    """The machine and software a benchmark runs on (JSON-able).

    proc: the ``/proc`` folder to read (tests pass a fake one); the default is ``/proc``.
    """
    cpu = read_cpuinfo(proc / "cpuinfo")
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    flags = cpu.get("flags", [])
    return {
        "cpu_model": cpu.get("model"),
        "logical_cpus": os.cpu_count(),
        "physical_cores": cpu.get("physical_cores"),
        "usable_cpus": affinity,
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "cpu_flags": flags,
        "memory_gb": _mem_total_gb(proc / "meminfo"),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
        "onnxruntime_providers": _ort_providers(),
        "load_average": load_average(),
    }


def read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """Model name, flags (x86 ``flags`` or aarch64 ``Features``) and physical core count from a
    ``/proc/cpuinfo`` file; an empty dict when it cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return {}
    model = None
    flags: list[str] = []
    cores: set[tuple[str, str]] = set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Hardware", "CPU part") and model is None and value:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = sorted(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key and phys is not None and core is not None:  # end of a processor block
            cores.add((phys, core))
            phys = core = None
    if phys is not None and core is not None:
        cores.add((phys, core))
    return {"model": model, "flags": flags, "physical_cores": len(cores) or None}


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (those not installed are left out)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the system has none): a shared machine's
    load is part of every timing taken on it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _mem_total_gb(path: Path) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ort_providers() -> list[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a runtime dependency
        return None
    return list(ort.get_available_providers())
