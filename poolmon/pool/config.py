"""PoolConfig: every knob of :class:`~poolmon.pool.Pool` and :class:`~poolmon.pool.AsyncPool`,
validated once at construction so a bad value fails loudly with the parameter and its range.

Durations are seconds on the pool's injected clock (``None`` disables the rule). The defaults
follow HikariCP and psycopg_pool where they agree: lazy, LIFO, 30 s borrow timeout, 30 min
lifetime with 10 % jitter, 10 min idle timeout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Final

from poolmon.errors import ConfigError

__all__ = ["PoolConfig", "TenantQuota"]

_ORDERS: Final = ("lifo", "fifo")
_TENANT_POLICIES: Final = ("wait", "refuse")
#: The spec's bound on priority classes (0..15).
MAX_PRIORITIES: Final = 16


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """One tenant's share of a pool: at most ``limit`` connections lent at once (None: the
    pool's ``tenant_limit``), and ``reserve`` of them kept available for it: other tenants
    cannot take the last connections that would leave its unused reserve uncovered."""

    limit: int | None = None
    reserve: int = 0


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

    # -- burst capacity (off while burst_max is None) ------------------------------------------
    #: Hard ceiling above ``max_size``: burst connections may be opened up to it, only while
    #: callers are measurably waiting (see ``burst_after``/``burst_queue``).
    burst_max: int | None = None
    #: Open a burst connection once the oldest waiter has waited this long (pool clock) ...
    burst_after: float = 0.05
    #: ... or once this many callers wait (None: wait time only).
    burst_queue: int | None = None
    #: Burst connections live at most this long (shorter than ``max_lifetime``).
    burst_lifetime: float = 60.0
    #: A burst connection idle this long is surplus; each maintenance pass closes this
    #: fraction of the surplus (at least one), so the pool contracts gradually.
    burst_idle: float = 1.0
    burst_decay: float = 0.5

    # -- tenants (off while tenants is None and tenant_limit is None) --------------------------
    #: Per-tenant quotas by name: a ``TenantQuota`` or an int (the limit).
    tenants: Mapping[str, TenantQuota | int] | None = field(default=None, hash=False)
    #: Limit of a tenant not listed in ``tenants`` (None: only the pool's max).
    tenant_limit: int | None = None
    #: A tenant at its limit ``"wait"``s (for its own connections) or is refused at once.
    tenant_policy: str = "wait"
    #: Distinct tenant names reported in events and metrics; later ones are ``"other"``.
    tenant_cap: int = 100

    # -- priorities (off while priorities == 1) ------------------------------------------------
    #: Priority classes 0 (most urgent) .. priorities - 1; waiters of a more urgent class are
    #: served first.
    priorities: int = 1
    #: Aging: a waiter's class improves by one for every ``aging`` seconds it has waited, so a
    #: class-k waiter is served no later than a newcomer of class 0 after k * aging seconds.
    aging: float = 0.05

    # -- adaptive backpressure (off while wait_budget is None) ---------------------------------
    #: Refuse at once (error ``shed``) a caller whose estimated wait exceeds this many seconds.
    wait_budget: float | None = None
    #: Recent use times averaged for the estimate (an exponential moving average's weight).
    shed_smoothing: float = 0.2

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
        self._check_burst()
        self._check_tenants()
        _int_in("priorities", self.priorities, 1, MAX_PRIORITIES)
        _seconds("aging", self.aging, positive=True, allow_none=False)
        _seconds("wait_budget", self.wait_budget, positive=True)
        _open_fraction("shed_smoothing", self.shed_smoothing)

    @property
    def ceiling(self) -> int:
        """The most connections the pool may hold: ``burst_max`` when set, else ``max_size``."""
        return self.burst_max if self.burst_max is not None else self.max_size

    def _check_burst(self) -> None:
        if self.burst_max is not None:
            low = self.max_size + 1
            if not _is_int(self.burst_max) or self.burst_max < low:
                raise ConfigError(
                    "burst_max", self.burst_max, f"an int >= max_size + 1 = {low}, or None"
                )
        _seconds("burst_after", self.burst_after, allow_none=False)
        if self.burst_queue is not None:
            _int_range("burst_queue", self.burst_queue, 1)
        _seconds("burst_lifetime", self.burst_lifetime, positive=True, allow_none=False)
        _seconds("burst_idle", self.burst_idle, allow_none=False)
        _open_fraction("burst_decay", self.burst_decay)

    def _check_tenants(self) -> None:
        top = self.max_size
        if self.tenant_limit is not None:
            _int_in("tenant_limit", self.tenant_limit, 1, top, what="max_size")
        if self.tenant_policy not in _TENANT_POLICIES:
            raise ConfigError("tenant_policy", self.tenant_policy, "'wait' or 'refuse'")
        _int_range("tenant_cap", self.tenant_cap, 1)
        if self.tenants is None:
            return
        if not isinstance(self.tenants, Mapping):
            raise ConfigError("tenants", self.tenants, "a mapping of tenant name to quota")
        reserved = 0
        for name, quota in self.tenants.items():
            where = f"tenants[{name!r}]"
            if not isinstance(name, str) or not name or name == "other":
                raise ConfigError("tenants", name, "tenant names: non-empty str, not 'other'")
            if isinstance(quota, TenantQuota):
                limit, reserve = quota.limit, quota.reserve
            elif _is_int(quota):
                limit, reserve = int(quota), 0
            else:
                raise ConfigError(where, quota, "an int limit or a TenantQuota")
            if limit is not None:
                _int_in(f"{where}.limit", limit, 1, top, what="max_size")
            _int_in(f"{where}.reserve", reserve, 0, limit if limit is not None else top)
            reserved += reserve
        if reserved > top:
            raise ConfigError("tenants", reserved, f"reserves summing to at most max_size={top}")

    @property
    def tenants_on(self) -> bool:
        return self.tenants is not None or self.tenant_limit is not None

    @classmethod
    def names(cls) -> frozenset[str]:
        """The accepted keyword names (the pools use it to split config from other kwargs)."""
        return frozenset(f.name for f in fields(cls))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(name: str, value: object, lower: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lower:
        raise ConfigError(name, value, f"an int >= {lower}")


def _int_in(name: str, value: object, lower: int, upper: int, *, what: str = "") -> None:
    if not _is_int(value) or not lower <= value <= upper:  # type: ignore[operator]
        bound = f"{what}={upper}" if what else str(upper)
        raise ConfigError(name, value, f"an int in [{lower}, {bound}]")


def _open_fraction(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and 0.0 < value <= 1.0:  # type: ignore[operator]
        return
    raise ConfigError(name, value, "a fraction in (0, 1]")


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
