"""PoolConfig: every knob of :class:`~poolmon.pool.Pool` and :class:`~poolmon.pool.AsyncPool`,
validated once at construction so a bad value fails loudly with the parameter and its range.

Durations are seconds on the pool's injected clock (``None`` disables the rule). The defaults
follow HikariCP and psycopg_pool where they agree: lazy, LIFO, 30 s borrow timeout, 30 min
lifetime with 10 % jitter, 10 min idle timeout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

from poolmon.errors import ConfigError

__all__ = ["PoolConfig"]

_ORDERS: Final = ("lifo", "fifo")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """The pool's configuration. Construct it directly or pass the same keywords to the pool."""

    #: Connections the pool keeps open (warm-up target; idle timeout never goes below it).
    min_size: int = 0
    #: Upper bound on open connections (idle + used + being created).
    max_size: int = 10
    #: Default seconds :meth:`Pool.getconn` waits before raising PoolTimeout.
    timeout: float = 30.0
    #: Refuse at once (PoolExhausted) instead of waiting when nothing is free.
    fail_fast: bool = False
    #: Callers allowed to queue at once; one more gets PoolExhausted. ``None``: unlimited.
    max_waiting: int | None = None
    #: Bounded barging: a returned connection goes back to idle (a caller arriving meanwhile,
    #: e.g. the returning thread borrowing again, may take it first) until the oldest waiter
    #: has waited this many seconds; from then on returns hand it straight to the oldest
    #: waiter ("starvation mode", as Go's sync.Mutex). 0: always hand off (strict FIFO).
    handoff_after: float = 0.001
    #: ``"lifo"`` (default: the warmest connection, lets the rest idle out) or ``"fifo"``.
    order: str = "lifo"
    #: Close a connection this many seconds after it was opened (checked on borrow and return).
    max_lifetime: float | None = 1800.0
    #: Each connection's lifetime is shortened by up to this fraction, at random, so a pool
    #: opened at once does not reconnect all at once.
    lifetime_jitter: float = 0.1
    #: Close idle connections unused this long (down to ``min_size``), in maintenance passes.
    idle_timeout: float | None = 600.0
    #: Validate on borrow only when idle at least this long (0: always; ``None``: never).
    validate_after: float | None = 1.0
    #: Validate idle connections in the background when idle at least this long.
    background_validation: float | None = None
    #: Run the factory's ``reset`` on every return (failure evicts with reason reset_failed).
    reset_on_return: bool = True
    #: Report a borrow held this long as ``leak_suspected`` (with its stack when sampled).
    leak_threshold: float | None = None
    #: Capture the borrow stack on one borrow in N (0: never; costs ~20 us per captured borrow).
    stack_sample_every: int = 0
    #: Forcibly evict (reason ``leaked``) and destroy a connection held this long.
    reclaim_after: float | None = None
    #: Seconds between maintenance passes of the background maintainer.
    maintenance_interval: float = 1.0
    #: Start the background maintainer thread/task (tests drive ``run_maintenance`` instead).
    maintain: bool = True
    #: Spread the warm-up of ``min_size`` connections over up to this many seconds.
    warmup_jitter: float = 0.0
    #: Open ``min_size`` connections on construction (sync pool) or ``open()`` (async pool).
    eager: bool = False
    #: First wait after a failed create; doubles per consecutive failure up to ``backoff_max``.
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    #: Fraction of each backoff window randomised (full jitter would be 1.0).
    backoff_jitter: float = 0.5

    def __post_init__(self) -> None:
        _int_range("min_size", self.min_size, 0)
        _int_range("max_size", self.max_size, 1)
        if self.min_size > self.max_size:
            raise ConfigError("min_size", self.min_size, f"an int in [0, max_size={self.max_size}]")
        _seconds("timeout", self.timeout, allow_none=False)
        if self.max_waiting is not None:
            _int_range("max_waiting", self.max_waiting, 0)
        _seconds("handoff_after", self.handoff_after, allow_none=False)
        if self.order not in _ORDERS:
            raise ConfigError("order", self.order, "'lifo' or 'fifo'")
        _seconds("max_lifetime", self.max_lifetime, positive=True)
        _fraction("lifetime_jitter", self.lifetime_jitter, upper=0.5)
        _seconds("idle_timeout", self.idle_timeout, positive=True)
        _seconds("validate_after", self.validate_after)
        _seconds("background_validation", self.background_validation)
        _seconds("leak_threshold", self.leak_threshold, positive=True)
        _int_range("stack_sample_every", self.stack_sample_every, 0)
        _seconds("reclaim_after", self.reclaim_after, positive=True)
        _seconds("maintenance_interval", self.maintenance_interval, positive=True, allow_none=False)
        _seconds("warmup_jitter", self.warmup_jitter, allow_none=False)
        _seconds("backoff_initial", self.backoff_initial, positive=True, allow_none=False)
        _seconds("backoff_max", self.backoff_max, positive=True, allow_none=False)
        if self.backoff_max < self.backoff_initial:
            raise ConfigError(
                "backoff_max",
                self.backoff_max,
                f"seconds >= backoff_initial={self.backoff_initial}",
            )
        _fraction("backoff_jitter", self.backoff_jitter, upper=1.0)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The accepted keyword names (the pools use it to split config from other kwargs)."""
        return frozenset(f.name for f in fields(cls))


def _int_range(name: str, value: object, lower: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lower:
        raise ConfigError(name, value, f"an int >= {lower}")


def _seconds(name: str, value: object, *, positive: bool = False, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 if positive else value >= 0):  # type: ignore[operator]
        return
    bound = "> 0" if positive else ">= 0"
    accepted = f"finite seconds {bound}" + (" or None" if allow_none else "")
    raise ConfigError(name, value, accepted)


def _fraction(name: str, value: object, *, upper: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and 0.0 <= value <= upper:  # type: ignore[operator]
        return
    raise ConfigError(name, value, f"a fraction in [0, {upper}]")
