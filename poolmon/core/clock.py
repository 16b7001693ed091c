"""Clocks: where poolmon reads time.

Durations (wait, use, create, age) come from a monotonic clock in seconds; event timestamps come
from the wall clock. Both are injectable so tests control time exactly instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "system_clock"]


class Clock(Protocol):
    """The two readings poolmon needs. ``monotonic`` is on the hot path: keep it cheap."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (only differences are meaningful)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch, for event timestamps."""
        ...


class SystemClock:
    """The real clocks: ``time.perf_counter`` and ``time.time``."""

    __slots__ = ()

    # Plain aliases rather than wrapper methods: the ledger binds ``clock.monotonic`` once and a
    # builtin call is the cheapest thing Python can do per event.
    monotonic = staticmethod(time.perf_counter)
    wall = staticmethod(time.time)


system_clock: Clock = SystemClock()


class ManualClock:
    """A clock that moves only when told to. For tests and replays.

    >>> clock = ManualClock(start=100.0)
    >>> clock.advance(2.5)
    >>> clock.monotonic()
    102.5
    """

    __slots__ = ("_lock", "_mono", "_wall")

    def __init__(self, start: float = 0.0, wall_start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._mono = start
        self._wall = wall_start

    def monotonic(self) -> float:
        return self._mono

    def wall(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._mono += seconds
            self._wall += seconds
