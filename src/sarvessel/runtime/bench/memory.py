"""Resident memory of this process: the high-water mark (what "peak RSS" means in every report)
and a sampler thread for RSS over time.

On Linux the peak is ``VmHWM`` of ``/proc/self/status`` and can be reset by writing ``5`` to
``/proc/self/clear_refs`` (Linux >= 4.0, proc(5)), so one process can measure several runs apart;
elsewhere it falls back to ``getrusage(RUSAGE_SELF).ru_maxrss``, which cannot be reset. Both count
everything the process maps: the interpreter, numpy, onnxruntime and the model as well as the
scene's buffers. No psutil.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["RssSampler", "current_rss_bytes", "peak_rss_bytes", "reset_peak_rss"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def peak_rss_bytes(*, status: Path = _STATUS) -> int:
    """Peak resident set size of this process so far (bytes): ``VmHWM``, else ``ru_maxrss``."""
    kib = _status_kib("VmHWM", status)
    if kib is not None:
        return kib * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes; Linux: KiB


def current_rss_bytes(*, status: Path = _STATUS) -> int | None:
    """Resident set size now (bytes; ``VmRSS``), None where ``/proc`` is missing."""
    kib = _status_kib("VmRSS", status)
    return None if kib is None else kib * 1024


def reset_peak_rss(*, clear_refs: Path = _CLEAR_REFS) -> bool:
    """Reset the peak to the current RSS (``echo 5 > /proc/self/clear_refs``); False where the
    kernel does not allow it (the peak then counts from the process's start)."""
    try:
        clear_refs.write_text("5")
    except OSError as exc:
        log.debug("cannot reset the RSS peak (%s)", exc)
        return False
    return True


class RssSampler:
    """Samples ``VmRSS`` every ``interval_s`` on a daemon thread: RSS over a run, to show that
    memory stays flat while a scene streams. ``with RssSampler() as s: ...``; then
    ``s.samples`` holds (monotonic seconds, bytes).

    interval_s: seconds between samples; the default is 0.25. max_samples: older samples are
    thinned (every other one dropped) beyond this; the default is 4096.
    """

    def __init__(self, *, interval_s: float = 0.25, max_samples: int = 4096) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = float(interval_s)
        self.max_samples = int(max_samples)
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        if current_rss_bytes() is None:
            log.debug("no /proc/self/status: RSS is not sampled")
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def max_bytes(self) -> int | None:
        return max((b for _, b in self.samples), default=None)

    def _sample(self) -> None:
        rss = current_rss_bytes()
        if rss is not None:
            self.samples.append((time.monotonic(), rss))
            if len(self.samples) > self.max_samples:
                self.samples = self.samples[::2]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)


def _status_kib(field: str, status: Path) -> int | None:
    try:
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
