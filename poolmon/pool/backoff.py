"""Exponential backoff with jitter for failing creates, and the one-log-line-per-window rule.

After ``n`` consecutive create failures the next attempt waits
``min(initial * 2**(n-1), maximum)`` seconds, shortened by a random fraction up to ``jitter``
so that many processes restarted together do not reconnect in lockstep. A success resets it.

Logging is rate-limited to one line per backoff window: a database that is down for an hour
produces a line per ``maximum`` seconds, not one per attempt per caller.

Not thread-safe on its own: the pools call it under their lock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from poolmon.core.redact import scrub

__all__ = ["Backoff"]


class Backoff:
    """Tracks consecutive create failures and when the next attempt is allowed."""

    __slots__ = (
        "_failures",
        "_initial",
        "_jitter",
        "_logged_until",
        "_maximum",
        "_random",
        "last_error",
        "ready_at",
    )

    def __init__(
        self,
        initial: float,
        maximum: float,
        jitter: float,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._random = rng
        self._failures = 0
        self._logged_until = float("-inf")
        #: Monotonic time before which no create should be attempted.
        self.ready_at = float("-inf")
        #: The most recent create error (chained into timeouts so callers see why).
        self.last_error: BaseException | None = None

    @property
    def failures(self) -> int:
        return self._failures

    def ready(self, now: float) -> bool:
        return now >= self.ready_at

    def window(self) -> float:
        """The un-jittered delay that follows the current number of failures."""
        if self._failures == 0:
            return 0.0
        exponent = min(self._failures - 1, 62)
        return float(min(self._initial * (2.0**exponent), self._maximum))

    def failure(self, now: float, error: BaseException) -> float:
        """Record a failure at ``now``; returns the delay until the next attempt."""
        self._failures += 1
        self.last_error = error
        delay = self.window() * (1.0 - self._jitter * self._random())
        self.ready_at = now + delay
        return delay

    def success(self) -> None:
        self._failures = 0
        self.last_error = None
        self.ready_at = float("-inf")

    def log_failure(self, logger: logging.Logger, pool: str, now: float, delay: float) -> bool:
        """Log the latest failure unless a line was already written in this window."""
        if now < self._logged_until:
            return False
        self._logged_until = now + max(delay, self.window())
        error = self.last_error
        text = scrub(f"{type(error).__name__}: {error}") if error is not None else "unknown error"
        logger.warning(
            "poolmon: pool %s could not open a connection (%d consecutive failures): %s; "
            "retrying in %.3gs",
            pool,
            self._failures,
            text,
            delay,
        )
        return True
