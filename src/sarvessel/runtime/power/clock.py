"""Time for the power room: one clock object gives ``now()`` and ``sleep()``.

Sensors, the sampler and the governor all take the same clock, so a test drives them with a
:class:`ManualClock` (time moves only when the test or a ``sleep`` moves it: deterministic, no
real waiting) and a run uses :class:`SystemClock` (:func:`time.monotonic`).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Monotonic seconds and a way to wait."""

    def now(self) -> float:
        """Seconds on a monotonic scale (the origin is arbitrary)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (>= 0)."""
        ...


class SystemClock:
    """The process's monotonic clock (:func:`time.monotonic`, :func:`time.sleep`)."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ManualClock:
    """A clock that moves only when told: ``sleep(s)`` and ``advance(s)`` add ``s`` seconds.

    For tests and for planning runs that simulate a stream faster than real time.

    >>> c = ManualClock(10.0)
    >>> c.sleep(1.5); c.advance(0.5); c.now()
    12.0
    """

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError(f"time cannot go back ({seconds} s)")
        with self._lock:
            self._t += float(seconds)
