"""What :class:`~poolmon.pool.Pool` and :class:`~poolmon.pool.AsyncPool` share: configuration,
registration with the recorder, the per-connection record, the lifecycle rules and every state
change that needs no waiting.

The two pools differ only in how they wait (threads block on a per-waiter lock, tasks await a
future) and in how they guard their state (a mutex, or one event loop). Everything else lives
here once: the return reason, the idle sweep's classification, the fill/refill step, the
hand-off to the head waiter, slot grants, evictions, reclamation, drain and close. The
``*_locked`` methods are the pools' critical sections (see the note above them); the numbered
invariants they keep are listed in both pools' module docstrings, and each is cited where it is
kept. ``tests/unit/pool/test_twins.py`` fails when the two pools stop mirroring each other.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from poolmon.core.clock import Clock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.core.snapshot import PoolSnapshot
from poolmon.errors import (
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolQuotaExceeded,
    PoolShed,
    PoolTimeout,
)
from poolmon.pool.backoff import Backoff
from poolmon.pool.config import PoolConfig
from poolmon.pool.factory import check_factory, hook
from poolmon.pool.shares import Shares, TenantStats

__all__ = ["BasePool", "Entry", "Queued"]

T = TypeVar("T")

_log = logging.getLogger("poolmon")

#: Error types counted per tenant (at zero from the tenant's first borrow).
_TENANT_ERRORS = ("quota_exceeded", "timeout", "shed", "exhausted")

#: Reclaimed connections that cannot be weakly referenced are remembered (for their holder's
#: late return) up to this many, oldest forgotten first.
RECLAIMED_KEEP = 256


class Entry(Generic[T]):
    """One physical connection and what the rules need to know about it.

    ``gone`` is set (under the pool's lock) the moment the ledger records the eviction; whoever
    holds the entry next only destroys the resource, and never emits another event for it.
    """

    __slots__ = (
        "burst",
        "checked",
        "conn",
        "destroyed",
        "doomed",
        "expires",
        "gone",
        "id",
        "last_used",
        "lent_at",
        "tenant",
    )

    def __init__(
        self, ident: int, conn: T, now: float, expires: float, *, burst: bool = False
    ) -> None:
        self.id = ident
        self.burst = burst  # opened above max_size (burst capacity): closed first, sooner
        # An accounted borrow (pools with tenants or a wait budget): its tenant key ("" with a
        # wait budget alone) and when it was lent (the use-time estimate of backpressure).
        self.tenant: str | None = None
        self.lent_at = 0.0
        self.conn = conn
        self.expires = expires
        self.last_used = now  # when it was last returned (idle timeout counts from here)
        self.checked = now  # last return or successful validation (validate_after counts here)
        self.gone = False
        self.destroyed = False
        self.doomed: str | None = None  # eviction reason to apply on return (drain, mark_broken)


class Queued(Protocol):
    """A queued caller as the shared rules see it (Pool's ``_Waiter``, AsyncPool's
    ``_AsyncWaiter``). Whoever serves it sets one of ``entry``/``grant``/``closed`` and removes
    it from the queue in the same critical section, then wakes it."""

    t0: float
    entry: Any
    grant: bool
    closed: bool
    tenant: str  # its tenant key (pools with tenants), see poolmon.pool.shares
    prio: int  # its priority class (0: most urgent)

    @property
    def dead(self) -> bool:
        """Cancelled while queued (AsyncPool only): skipped, its task cleans up."""

    def wake(self) -> None:
        """Wake it once (idempotent until it consumes the wake-up)."""


W = TypeVar("W", bound=Queued)
F = TypeVar("F")


class BasePool(Generic[T, W, F]):
    """Configuration, identity, ledger, state and rules; subclasses add waiting and I/O."""

    #: AsyncPool awaits its factory's hooks; Pool calls them (checked at construction).
    _asynchronous: ClassVar[bool] = False

    def __init__(
        self,
        factory: F,
        config: PoolConfig | None = None,
        *,
        name: str | None = None,
        identity: PoolIdentity | None = None,
        registry: PoolRegistry | None = None,
        clock: Clock | None = None,
        rng: Callable[[], float] | None = None,
        route: tuple[str, str] | None = None,
        **options: Any,
    ) -> None:
        """``factory`` makes the resources; ``config`` and/or keyword options (the fields of
        :class:`PoolConfig`) configure the pool; ``name``/``identity`` name it (else the
        factory's ``identity``); ``registry``, ``clock`` and ``rng`` are injectable; ``route``
        (role, group) marks a member of a :class:`~poolmon.pool.routing.RoutingPool`.
        Raises ConfigError for a factory the pool cannot drive or a bad option value."""
        check_factory(factory, asynchronous=self._asynchronous)
        self._factory = factory
        unknown = set(options) - PoolConfig.names()
        if unknown:
            raise TypeError(f"unknown pool option(s): {', '.join(sorted(unknown))}")
        cfg = replace(config, **options) if config is not None else PoolConfig(**options)
        self.config = cfg
        self._registry = registry if registry is not None else get_default_registry()
        self._random = rng if rng is not None else random.random
        if identity is None:
            factory_identity = getattr(factory, "identity", None)
            identity = (
                factory_identity
                if isinstance(factory_identity, PoolIdentity)
                else PoolIdentity("poolmon")
            )
        if name is not None:
            identity = identity.with_name(scrub(name))
        self._ledger: PoolLedger = self._registry.register(
            identity,
            owner=self,
            max_size=cfg.ceiling,
            min_size=cfg.min_size,
            clock=clock,
            stack_sample_every=cfg.stack_sample_every,
            open_fields=self._open_fields(cfg, route),
        )
        self._now = self._ledger.now
        self._backoff = Backoff(
            cfg.backoff_initial, cfg.backoff_max, cfg.backoff_jitter, rng=self._random
        )
        # Validation thresholds; a pool whose factory has no validate hook sets them to None.
        self._validate_after = cfg.validate_after
        self._background_validation = cfg.background_validation
        # Bounded barging (see the pools' docstrings): the oldest waiter's wait, in seconds on
        # the pool clock, from which returns hand connections to it instead of parking them.
        self._handoff_after = cfg.handoff_after
        # Connections taken back by forced reclamation while lent, by id(resource): the
        # holder's late return is absorbed (see _remember_reclaimed). Not in the lent map, so a
        # holder that never returns keeps nothing of the pool busy (close() does not wait).
        self._reclaimed: dict[int, Callable[[], object]] = {}
        # The lending state, guarded by the pool's critical section (see the pools' docs).
        self._idle: deque[Entry[T]] = deque()
        self._pop = self._idle.pop if cfg.order == "lifo" else self._idle.popleft
        self._waiters: deque[W] = deque()
        self._lent: dict[int, Entry[T]] = {}
        self._size = 0
        self._closed = False
        # Burst capacity (off: burst_max None): the ceiling slots may be reserved up to, and
        # how many burst connections are open. _size <= _ceiling always (invariant 2).
        self._ceiling = cfg.ceiling
        self._burst_on = cfg.burst_max is not None
        self._bursts = 0
        # Tenants and priority classes (off: every waiter is equal, FIFO, no accounting).
        self._shares = Shares(cfg)
        # Adaptive backpressure (off: wait_budget None): a moving average of use times.
        self._shed_on = cfg.wait_budget is not None
        self._use_ema: float | None = None
        self._accounting = self._shares.tenants_on or self._shed_on
        # A member of a RoutingPool: its (role, group), and whether the router has it in service.
        self._route = route
        self.route_healthy = True
        self._plain = not (self._accounting or self._shares.prio_on)
        # Hooks the factory leaves as no-ops are skipped: a call saved on every return, and a
        # factory without a health check is never "validated" (no validate events).
        self._reset = hook(factory, "reset") if cfg.reset_on_return else None
        self._is_broken = hook(factory, "is_broken")
        if hook(factory, "validate") is None:
            self._validate_after = self._background_validation = None
        start = self._now()
        # Warm-up: when each of the min_size connections may be opened (spread, no storm).
        self._warmup = sorted(
            start + self._random() * cfg.warmup_jitter for _ in range(cfg.min_size)
        )
        if self._burst_on or self._shares.tenants_on or route is not None:
            self._ledger.optional_source = self._optional_points
        self._start()

    def _optional_points_locked(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The spec 1.1 optional metrics' points of this pool (exporters read them through
        the snapshot; tenant names are the folded ones, so the series stay bounded)."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        if self._burst_on:
            out["pool.connection.burst"] = [({}, float(self._bursts))]
            out["pool.connection.burst.max"] = [({}, float(self._ceiling - self.config.max_size))]
        if self._shares.tenants_on:
            usage, limits, borrows, errors = [], [], [], []
            for shown, stats in self._shares.stats().items():
                if not shown:
                    continue  # borrows naming no tenant: the pool's own series cover them
                attrs = {"pool.tenant": shown}
                usage.append((attrs, float(stats.used)))
                if stats.limit is not None:
                    limits.append((attrs, float(stats.limit)))
                borrows.append((attrs, float(stats.borrows)))
                for error_type in _TENANT_ERRORS:  # counters exist at zero
                    count = float(stats.errors.get(error_type, 0))
                    errors.append(({**attrs, "error.type": error_type}, count))
            out["pool.tenant.connection.usage"] = usage
            out["pool.tenant.connection.limit"] = limits
            out["pool.tenant.borrows"] = borrows
            out["pool.tenant.errors"] = errors
        if self._route is not None:
            role, group = self._route
            healthy = "true" if self.route_healthy else "false"
            attrs = {"pool.route": role, "pool.route.group": group, "pool.route.healthy": healthy}
            out["pool.route.info"] = [(attrs, 1.0)]
        return out

    def _optional_points(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        raise NotImplementedError

    @staticmethod
    def _open_fields(cfg: PoolConfig, route: tuple[str, str] | None) -> dict[str, Any]:
        """Spec 1.1 fields of the pool's open event (none when every feature is off)."""
        fields: dict[str, Any] = {}
        if route is not None:
            fields["route"], fields["route_group"] = route
        if cfg.burst_max is not None:
            fields["burst_max"] = cfg.burst_max - cfg.max_size
        return fields

    def _start(self) -> None:
        """The subclass's own state and start-up (its lock, the maintainer, eager fill)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public reading

    @property
    def name(self) -> str:
        return self._ledger.name

    @property
    def ledger(self) -> PoolLedger:
        return self._ledger

    def snapshot(self) -> PoolSnapshot:
        """The pool's state and totals (with outstanding leaks when a threshold is set)."""
        return self._ledger.snapshot(self.config.leak_threshold)

    # ------------------------------------------------------------------ reading

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        """Open connections plus creations in flight."""
        return self._size

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def tenant_stats(self) -> dict[str, TenantStats]:
        """Per reported tenant (folded past ``tenant_cap``; ``""``: no tenant named): used
        now, limit, borrows, errors by type. Empty unless tenants are configured or named."""
        return self._shares.stats()

    @property
    def bursts(self) -> int:
        """Burst connections open now (0 unless ``burst_max`` is set)."""
        return self._bursts

    def mark_broken(self, conn: T) -> None:
        """Flag a lent ``conn`` so its return evicts it (reason ``broken``), never lends it."""
        entry = self._lent.get(id(conn))
        if entry is not None and entry.conn is conn:
            entry.doomed = "broken"

    # ------------------------------------------------------------------ rules

    def _expiry(self, now: float) -> float:
        """When a connection opened at ``now`` must go: its lifetime minus up to jitter."""
        lifetime = self.config.max_lifetime
        if lifetime is None:
            return float("inf")
        return now + lifetime * (1.0 - self.config.lifetime_jitter * self._random())

    def _needs_validation(self, entry: Entry[T], now: float) -> bool:
        after = self._validate_after
        return after is not None and now - entry.checked >= after

    def _idle_expired(self, entry: Entry[T], now: float) -> bool:
        limit = self.config.idle_timeout
        return limit is not None and now - entry.last_used >= limit

    def _return_reason(self, entry: Entry[T], now: float, *, broken: bool) -> str | None:
        """Why a returned entry must be evicted instead of reused (None: reuse it)."""
        if broken:
            return "broken"
        if entry.doomed is not None:
            return entry.doomed
        if self._is_broken is not None:
            try:
                if self._is_broken(entry.conn):
                    return "broken"
            except Exception:
                return "broken"
        if now >= entry.expires:
            return "max_lifetime"
        return None

    def _idle_verdict(self, entry: Entry[T], now: float, surplus: int) -> str | None:
        """What a maintenance pass does with an idle entry: an eviction reason, ``"check"``
        (validate it in the background) or None (keep it). ``surplus``: connections above
        ``min_size`` still allowed to idle out."""
        if now >= entry.expires:
            return "max_lifetime"
        if surplus > 0 and self._idle_expired(entry, now):
            return "idle_timeout"
        after = self._background_validation
        if after is not None and now - entry.checked >= after:
            return "check"
        return None

    # ------------------------------------------------------------------ critical sections
    #
    # The methods below run inside the pool's critical section: under ``_lock`` in Pool,
    # between two awaits in AsyncPool (one event loop, no lock). They never block or await.

    def _live_head_locked(self) -> W | None:
        """The waiter served next, or None: the oldest live one (dead heads dropped: a
        cancelled task removes itself later, it must not hold the head meanwhile); with
        tenants or priorities, the best-ranked one whose tenant may take a connection."""
        waiters = self._waiters
        while waiters and waiters[0].dead:
            waiters.popleft()
        if not waiters:
            return None
        if self._plain:
            return waiters[0]
        shares = self._shares
        now = self._now()
        best: W | None = None
        best_rank: tuple[int, float] | None = None
        for waiter in waiters:
            if waiter.dead or not shares.admits(waiter.tenant):
                continue  # a tenant at its quota waits for its own returns: it blocks no one
            rank = shares.rank(waiter.prio, waiter.t0, now)
            if best_rank is None or rank < best_rank:
                best, best_rank = waiter, rank
        return best

    def _dequeue_locked(self, waiter: W) -> None:
        waiters = self._waiters
        if waiters[0] is waiter:
            waiters.popleft()
        else:
            waiters.remove(waiter)

    def _borrow_args(
        self, timeout: float | None, tenant: str | None, priority: int | None
    ) -> tuple[float, str, int]:
        """A slow-path borrow's timeout, tenant key and class (ConfigError for bad ones)."""
        if timeout is None:
            timeout = self.config.timeout
        return timeout, self._shares.key(tenant), self._shares.priority(priority)

    def _may_take_locked(self, key: str, prio: int) -> bool:
        """May a caller that is not queued take an idle connection now? Not while the head
        is starving (bounded barging), nor past its tenant's quota, nor ahead of a more
        urgent waiter (no priority inversion through barging)."""
        if self._plain:
            return not self._starving_locked()
        if not self._shares.admits(key):
            return False
        head = self._live_head_locked()
        if head is None:
            return True
        now = self._now()
        if now - head.t0 >= self._handoff_after:
            return False
        return not self._shares.prio_on or self._shares.rank(head.prio, head.t0, now)[0] >= prio

    def _may_open_locked(self, key: str) -> bool:
        """May a caller that is not queued reserve a slot now (invariant 2, quotas)?"""
        return self._can_open_locked() and (self._plain or self._shares.admits(key))

    def _record_borrow_locked(
        self,
        entry: Entry[T],
        t0: float | None,
        *,
        queued: bool,
        now: float | None,
        key: str,
        prio: int,
    ) -> None:
        """Record a borrow (and, with tenants, account it to its tenant; 1.1 fields)."""
        if self._plain and key == "" and not prio:
            self._ledger.borrow(entry.id, t0, queued=queued, now=now)
            return
        shares = self._shares
        if shares.tenants_on:
            shares.lend(key)
        if self._accounting:
            entry.tenant = key
            entry.lent_at = self._now() if now is None else now
        if self._ledger.lane.open:  # no subscriber builds event objects: nothing to annotate
            self._ledger.borrow(entry.id, t0, queued=queued, now=now)
            return
        self._ledger.annotation = self._annotation(key, prio)
        try:
            self._ledger.borrow(entry.id, t0, queued=queued, now=now)
        finally:
            self._ledger.annotation = None

    def _record_wait_locked(self, key: str, prio: int) -> None:
        """Record a caller queueing (with its tenant and class as 1.1 fields)."""
        if self._plain and key == "" and not prio:
            self._ledger.wait()
            return
        self._ledger.annotation = self._annotation(key, prio)
        try:
            self._ledger.wait()
        finally:
            self._ledger.annotation = None

    def _lent_shared_locked(self, entry: Entry[T], key: str, prio: int, now: float) -> None:
        """The fast path's borrow in a pool with tenants or priorities, when a subscriber
        sees event objects: recorded with the 1.1 fields (the quota is already taken)."""
        ledger = self._ledger
        ledger.annotation = self._annotation(key, prio)
        try:
            ledger.borrow(entry.id, now=now)
        finally:
            ledger.annotation = None

    def _annotation(self, key: str, prio: int) -> dict[str, Any] | None:
        fields: dict[str, Any] = {}
        shown = self._shares.name(key)
        if shown is not None:
            fields["tenant"] = shown
        if self._shares.prio_on:
            fields["priority"] = prio
        return fields or None

    def _unlend_locked(self, entry: Entry[T], now: float | None = None) -> None:
        """An accounted borrow ended: its tenant's quota frees up; a return (``now`` given)
        feeds the use-time average of adaptive backpressure."""
        key = entry.tenant
        if key is None:
            return
        entry.tenant = None
        if self._shares.tenants_on:
            self._shares.unlend(key)
        if now is not None and self._shed_on:
            used = now - entry.lent_at
            ema = self._use_ema
            weight = self.config.shed_smoothing
            self._use_ema = used if ema is None else ema + weight * (used - ema)

    def _shed_estimate_locked(self) -> float | None:
        """The estimated wait of a caller queueing now: one return frees a connection, and
        ``size`` connections each held ``use`` seconds return ``size / use`` per second, so
        ``(waiting + 1) * use / size``. None before any return was measured."""
        use = self._use_ema
        if use is None or self._size == 0:
            return None
        return (len(self._waiters) + 1) * use / self._size

    def _starving_locked(self) -> bool:
        """The oldest live waiter has waited ``handoff_after`` or more: no barging."""
        head = self._live_head_locked()
        return head is not None and self._now() - head.t0 >= self._handoff_after

    def _can_open_locked(self) -> bool:
        """A slot may be reserved now: below ``max_size``, or below the burst ceiling while
        waits are measured; never during a create backoff window (invariant 2)."""
        if not self._backoff.ready(self._now()):
            return False
        if self._size < self.config.max_size:
            return True
        return self._burst_on and self._size < self._ceiling and self._burst_demand_locked()

    def _burst_demand_locked(self) -> bool:
        """Callers are measurably waiting: the oldest has waited ``burst_after`` or
        ``burst_queue`` callers queue. Never while a connection is idle: all in use is not
        enough, a burst answers waits the pool cannot serve."""
        waiters = self._waiters
        if self._idle or not waiters:
            return False
        cfg = self.config
        if cfg.burst_queue is not None and len(waiters) >= cfg.burst_queue:
            return True
        return self._now() - waiters[0].t0 >= cfg.burst_after

    def _burst_wake_in(self, now: float) -> float | None:
        """Pool-clock seconds until the oldest waiter's wait makes a burst possible, for a
        waiter's sleep (None: no burst to wait for)."""
        if not self._burst_on or self._size >= self._ceiling or not self._waiters:
            return None
        return max(0.0, self._waiters[0].t0 + self.config.burst_after - now)

    def _sleep_step(self, remaining: float) -> float:
        """How long a queued caller sleeps before it looks again by itself: its deadline, or
        sooner when a create backoff window ends or its wait makes a burst possible (a slot
        may be free then). A wake-up from a return or a grant comes earlier anyway."""
        now = self._now()
        step = remaining
        backoff_left = self._backoff.ready_at - now
        if 0 < backoff_left < step:
            step = backoff_left
        burst_in = self._burst_wake_in(now)
        if burst_in is not None and burst_in < step:
            step = max(burst_in, 0.001)
        return step

    def _queued_locked(self) -> None:
        """A caller just queued: a queue past ``burst_queue`` may open a burst slot at once."""
        if self._burst_on and self.config.burst_queue is not None:
            self._offer_slots_locked()

    def _refusal_locked(self, key: str = "") -> tuple[str, str] | None:
        """Why a caller about to queue is refused at once, as (error type, message), or None:
        ``quota_exceeded`` (its tenant is at its quota and ``tenant_policy="refuse"``), else
        ``exhausted`` (fail-fast, max_waiting)."""
        shares = self._shares
        if shares.tenants_on and shares.policy == "refuse" and not shares.admits(key):
            return "quota_exceeded", self._quota_message(key)
        if self._shed_on:
            estimate = self._shed_estimate_locked()
            budget = self.config.wait_budget
            if estimate is not None and budget is not None and estimate > budget:
                return "shed", (
                    f"estimated wait {estimate:.3g}s exceeds wait_budget={budget:g}s "
                    f"({len(self._waiters)} waiting, mean use {self._use_ema or 0.0:.3g}s, "
                    f"size {self._size})"
                )
        if self.config.fail_fast:
            return "exhausted", "no connection available and fail_fast is set"
        limit = self.config.max_waiting
        if limit is not None and len(self._waiters) >= limit:
            return "exhausted", f"max_waiting={limit} callers already waiting"
        return None

    def _quota_message(self, key: str) -> str:
        shares = self._shares
        shown = shares.name(key) or "(default)"
        used = shares.held(key)
        return f"tenant {shown!r} holds {used} of its limit {shares.limit(key)}" + (
            "" if shares.at_limit(key) else " (the rest is reserved for other tenants)"
        )

    def _timed_out_locked(self, waiter: W, timeout: float) -> PoolError:
        """Resolve a waiter whose deadline passed: ``timeout``, or ``quota_exceeded`` when
        only its tenant's quota kept it waiting (a connection or slot existed for others)."""
        key = waiter.tenant
        if self._shares.tenants_on and not self._shares.admits(key):
            quota = PoolQuotaExceeded(self._quota_message(key), self._ledger.snapshot())
            self._shares.failed(key, "quota_exceeded")
            self._error_locked("quota_exceeded", "wait", quota, key, waiter.prio, waiter.t0)
            return quota
        error = self._timeout_error(waiter.t0, timeout)
        if self._shares.tenants_on:
            self._shares.failed(key, "timeout")
        self._error_locked("timeout", "wait", error, key, waiter.prio, waiter.t0)
        return error

    def _error_locked(
        self, error_type: str, phase: str, error: PoolError, key: str, prio: int, t0: float | None
    ) -> None:
        duration = None if t0 is None else max(0.0, self._now() - t0)
        self._ledger.annotation = None if self._plain else self._annotation(key, prio)
        try:
            self._ledger.error(error_type, phase, error, duration=duration)
        finally:
            self._ledger.annotation = None

    def _served_locked(self, waiter: W) -> tuple[Entry[T] | None, bool] | None:
        """What a woken waiter was given: ``(entry, True)`` handed over (already lent and
        recorded), ``(None, False)`` a granted slot, ``(entry, False)`` an idle connection it
        takes as the head (normal mode: nobody ran first; still to check). None: nothing
        (barged, or a bare timer). The hand-off and the grant are checked first (inv. 4)."""
        if waiter.entry is not None:
            return waiter.entry, True
        if waiter.grant:
            return None, False
        if self._idle and self._live_head_locked() is waiter:
            self._dequeue_locked(waiter)
            entry = self._take_idle_locked()
            self._wake_head_locked()  # more idle: the next waiter's turn (invariant 3)
            return entry, False
        return None

    def _take_idle_locked(self) -> Entry[T]:
        """Pop an idle entry for the caller to check; in ``_lent`` so close() sees it (inv. 1)."""
        entry = self._pop()
        self._lent[id(entry.conn)] = entry
        return entry

    def _give_locked(self, entry: Entry[T], now: float) -> None:
        """Make a usable entry (in neither ``_idle`` nor ``_lent``) available.

        Starvation mode (the head has waited >= handoff_after): hand it straight to the head,
        recording the borrow now, so nobody can barge (invariant 4: entry set and waiter
        dequeued in one step). Normal mode: park it in ``_idle`` and wake the head, which keeps
        its place whether or not someone barges first (invariant 3).
        """
        head = self._live_head_locked()
        if head is not None and now - head.t0 >= self._handoff_after:
            self._dequeue_locked(head)
            self._lent[id(entry.conn)] = entry
            self._record_borrow_locked(
                entry, head.t0, queued=True, now=now, key=head.tenant, prio=head.prio
            )
            head.entry = entry
            head.wake()
            self._wake_head_locked()  # idle ones left from normal mode: the new head's turn
            return
        self._park_locked(entry)
        self._wake_head_locked()

    def _park_locked(self, entry: Entry[T]) -> None:
        """Put an entry in ``_idle``. A burst connection goes where borrowers take last (the
        cold end in LIFO order), so the normal ones serve first and burst ones idle out."""
        if entry.burst and self.config.order == "lifo":
            self._idle.appendleft(entry)
        else:
            self._idle.append(entry)

    def _wake_head_locked(self) -> None:
        """Keep invariant 3: an idle connection and a live waiter -> the head is woken."""
        if self._idle:
            head = self._live_head_locked()
            if head is not None:
                head.wake()

    def _evict_locked(self, entry: Entry[T], reason: str) -> None:
        """Record the eviction and free its slot (invariant 2); the caller destroys later."""
        entry.gone = True
        if entry.burst:
            self._bursts -= 1
            self._ledger.annotation = {"burst": True}
            try:
                self._ledger.evict(entry.id, reason)
            finally:
                self._ledger.annotation = None
        else:
            self._ledger.evict(entry.id, reason)
        self._size -= 1
        if self._waiters:
            self._offer_slots_locked()

    def _offer_slots_locked(self) -> None:
        """Grant free slots to the oldest waiters, each opening its own connection (inv. 2, 5)."""
        waiters = self._waiters
        granted = False
        while waiters and not self._closed and self._can_open_locked():
            waiter = self._live_head_locked()  # dead ones dropped: their tasks clean up
            if waiter is None:
                break  # the waiters left wait for their tenants' own returns
            self._dequeue_locked(waiter)
            self._reserve_locked(waiter.tenant)
            waiter.grant = True
            waiter.wake()  # a waiter already woken to look still sees grant first (inv. 4)
            granted = True
        if granted:
            self._wake_head_locked()

    def _reserve_locked(self, key: str | None) -> None:
        """Reserve a slot (invariant 2) for a caller of tenant ``key`` (None: maintenance):
        with tenants, it counts against the tenant's quota until it is lent or released, so
        concurrent creates cannot overshoot a limit."""
        self._size += 1
        if key is not None and self._shares.tenants_on:
            self._shares.hold(key)

    def _unhold_locked(self, key: str | None) -> None:
        if key is not None and self._shares.tenants_on:
            self._shares.unhold(key)

    def _free_slot_locked(self, key: str | None = None) -> None:
        """A reserved slot was not used (an interrupted create, a waiter gone): inv. 5."""
        self._size -= 1
        self._unhold_locked(key)
        self._offer_slots_locked()

    def _create_failed_locked(self, start: float, exc: Exception, key: str | None = None) -> None:
        """A create in a reserved slot failed: free the slot, record, back off."""
        self._size -= 1
        self._unhold_locked(key)
        if not self._closed:
            self._ledger.create_failed(start, exc)
        now = self._now()
        delay = self._backoff.failure(now, exc)
        self._log_create_failure(now, delay)

    def _new_entry_locked(self, conn: T, start: float) -> Entry[T]:
        """Record a connection opened in a reserved slot (a create event) as an entry.

        It is a burst connection when the other open ones already fill ``max_size``: marked
        in the event (``burst``), with the shorter ``burst_lifetime``."""
        self._backoff.success()
        now = self._now()
        expires = self._expiry(now)
        if self._burst_on and self._size - 1 - self._bursts >= self.config.max_size:
            self._bursts += 1
            self._ledger.annotation = {"burst": True}
            try:
                ident = self._ledger.create(start)
            finally:
                self._ledger.annotation = None
            expires = min(expires, now + self.config.burst_lifetime)
            return Entry(ident, conn, now, expires, burst=True)
        return Entry(self._ledger.create(start), conn, now, expires)

    def _validated_locked(self, entry: Entry[T], start: float, *, ok: bool) -> bool:
        """Record a health check that ran from ``start``. True: keep the entry (it passed, or
        it is ``gone`` and the caller sees that); False: the caller evicts it."""
        if entry.gone:
            return True
        self._ledger.validate(entry.id, start, ok=ok)
        if ok:
            entry.checked = self._now()
        return ok

    def _lend_new_locked(
        self, conn: T, start: float, t0: float, *, queued: bool, key: str = "", prio: int = 0
    ) -> Entry[T] | None:
        """Lend a connection opened in a reserved slot to its opener; None if closed meanwhile
        (the slot is released; the caller destroys ``conn``)."""
        self._unhold_locked(key)  # the quota is taken by the borrow itself from here on
        if self._closed:
            self._size -= 1
            return None
        entry = self._new_entry_locked(conn, start)
        self._lent[id(conn)] = entry
        self._record_borrow_locked(entry, t0, queued=queued, now=None, key=key, prio=prio)
        return entry

    def _park_new_locked(self, conn: T, start: float) -> bool:
        """Make a connection opened by fill/refill available; False if the pool closed
        meanwhile (the slot is released; the caller destroys ``conn``)."""
        if self._closed:
            self._size -= 1
            return False
        now = self._now()
        self._give_locked(self._new_entry_locked(conn, start), now)
        return True

    def _grow_step_locked(self, *, maintenance: bool) -> float | None:
        """One step of ``fill()`` (``maintenance=False``) or a maintenance refill: None when a
        slot was reserved (open a connection now, outside the critical section); otherwise
        stop, and the next maintenance pass is due in that many seconds.

        A refill first grants free slots to waiters (oldest first), then respects the create
        backoff and the warm-up schedule (``warmup_jitter``: no connection storm at start).
        """
        interval = self.config.maintenance_interval
        if self._closed:
            return interval
        if maintenance:
            self._offer_slots_locked()
        if self._size >= self.config.min_size:
            return interval
        if maintenance:
            now = self._now()
            if not self._backoff.ready(now):
                return min(interval, self._backoff.ready_at - now)
            if self._warmup:
                if self._warmup[0] > now:
                    return min(interval, self._warmup[0] - now)
                self._warmup.pop(0)
        self._size += 1  # reserve the slot (invariant 2)
        return None

    def _sweep_idle_locked(self) -> tuple[list[Entry[T]], list[Entry[T]]]:
        """Evict idle entries past their lifetime or idle timeout (never below ``min_size``)
        and take those due for background validation into ``_lent`` (close() must see them).
        Returns (evicted, to check); the caller destroys and validates outside."""
        now = self._now()
        surplus = self._size - self.config.min_size
        victims: list[Entry[T]] = []
        to_check: list[Entry[T]] = []
        keep: list[Entry[T]] = []
        # The left end holds the least recently returned entries, in both orders.
        for entry in self._idle:
            verdict = self._idle_verdict(entry, now, surplus)
            if verdict is None:
                keep.append(entry)
            elif verdict == "check":
                self._lent[id(entry.conn)] = entry
                to_check.append(entry)
            else:
                self._evict_locked(entry, verdict)
                victims.append(entry)
                surplus -= 1
        if self._burst_on and self._bursts:
            keep = self._contract_bursts_locked(keep, now, victims)
        self._idle.clear()
        self._idle.extend(keep)
        return victims, to_check

    def _contract_bursts_locked(
        self, idle: list[Entry[T]], now: float, victims: list[Entry[T]]
    ) -> list[Entry[T]]:
        """Close a ``burst_decay`` fraction (at least one) of the burst connections idle for
        ``burst_idle`` or more, longest idle first (reason ``burst_shrink``); returns the
        idle entries kept. One fraction per maintenance pass: a gradual contraction, so a
        burst that ends does not turn into a close-reopen oscillation."""
        cfg = self.config
        surplus = [e for e in idle if e.burst and now - e.last_used >= cfg.burst_idle]
        if not surplus:
            return idle
        surplus.sort(key=lambda e: e.last_used)
        count = max(1, int(len(surplus) * cfg.burst_decay))
        closing = {id(e) for e in surplus[:count]}
        for entry in surplus[:count]:
            self._evict_locked(entry, "burst_shrink")
            victims.append(entry)
        return [e for e in idle if id(e) not in closing]

    def _restore_locked(self, entry: Entry[T]) -> bool:
        """Put an entry validated in the background back (or hand it to a waiter); False when
        it was evicted meanwhile (the caller destroys it)."""
        del self._lent[id(entry.conn)]
        if entry.gone:
            return False
        self._give_locked(entry, self._now())
        return True

    def _put_back_locked(self, entry: Entry[T]) -> bool:
        """An entry taken from idle whose check was interrupted goes back (invariant 5).
        False when it is gone or the pool closed (evicted; the caller destroys it)."""
        self._lent.pop(id(entry.conn), None)
        self._unlend_locked(entry)
        if entry.gone:
            return False
        if self._closed:
            self._evict_locked(entry, "pool_closed")
            return False
        self._give_locked(entry, self._now())
        return True

    def _settle_return_locked(
        self, entry: Entry[T], now: float, reason: str | None, reset_error: Exception | None
    ) -> bool:
        """The end of a return, once the reason is known and the reset ran: reuse the entry
        (parked, or handed to the head waiter) or evict it. False: the caller destroys it.

        The entry must already be out of ``_lent``. One that is ``gone`` was reclaimed while
        lent (this is its holder's late return): no second evict."""
        self._unlend_locked(entry, now)
        if entry.gone:
            self._reclaimed.pop(id(entry.conn), None)
            return False
        if reason is None and not self._closed:
            entry.last_used = entry.checked = now
            self._give_locked(entry, now)
            return True
        if reset_error is not None:
            self._ledger.error("reset_failed", "reset", reset_error, conn=entry.id)
        self._evict_locked(entry, reason or "pool_closed")
        return False

    def _reclaim_locked(self, leaked: set[int]) -> list[Entry[T]]:
        """Take back lent connections whose ids are in ``leaked`` (reason ``leaked``).

        Out of ``_lent`` at once (a holder that never returns keeps nothing busy); its late
        return finds it in ``_reclaimed`` and is absorbed, with no second evict."""
        victims = [e for e in self._lent.values() if e.id in leaked and not e.gone]
        for entry in victims:
            del self._lent[id(entry.conn)]
            self._unlend_locked(entry)
            self._remember_reclaimed(entry.conn)
            self._evict_locked(entry, "leaked")
        return victims

    def _drain_locked(self) -> list[Entry[T]]:
        """Evict every idle entry now and doom every lent one (reason ``pool_closed``)."""
        victims = list(self._idle)
        self._idle.clear()
        for entry in victims:
            self._evict_locked(entry, "pool_closed")
        for entry in self._lent.values():
            entry.doomed = "pool_closed"
        return victims

    def _close_locked(self) -> list[Entry[T]]:
        """Mark the pool closed, fail every waiter with PoolClosed (invariant 6) and evict the
        idle entries (returned for the caller to destroy)."""
        self._closed = True
        waiters = list(self._waiters)
        self._waiters.clear()
        for waiter in waiters:
            if waiter.dead:
                continue  # its task records its own cancellation
            # Resolved here, in order, so the stream has no event after the close event.
            self._ledger.error("pool_closed", "wait", "the pool was closed while waiting")
            waiter.closed = True
            waiter.wake()
        victims = list(self._idle)
        self._idle.clear()
        for entry in victims:
            self._evict_locked(entry, "pool_closed")
        return victims

    def _evict_lent_locked(self) -> None:
        """The end of close(): every entry still lent is recorded as evicted, then closed."""
        for entry in self._lent.values():
            if not entry.gone:
                self._evict_locked(entry, "pool_closed")
        self._ledger.close()

    # ------------------------------------------------------------------ reclamation

    def _remember_reclaimed(self, conn: object) -> None:
        """Note that ``conn`` was reclaimed while lent, so its holder's late return is harmless.

        A weak reference where the resource allows one: the note lives exactly as long as
        someone still holds the resource (and while it lives, its id cannot be reused by a new
        connection, so the id key is unambiguous). Otherwise a strong reference, bounded by
        ``RECLAIMED_KEEP``. Weakref callbacks run in any thread, even one holding the pool lock,
        so they only touch this dict (single dict operations are atomic).
        """
        key = id(conn)
        table = self._reclaimed
        ref: Callable[[], object]
        try:
            ref = weakref.ref(conn, _forget_on_death(table, key))
        except TypeError:  # not weak-referenceable (e.g. a bare object())
            ref = _Strong(conn)
        table[key] = ref
        while len(table) > RECLAIMED_KEEP:
            try:
                table.pop(next(iter(table)), None)
            except (RuntimeError, StopIteration):  # a weakref callback changed it meanwhile
                break

    def _unknown_return(self, conn: object) -> None:
        """A return of something not in ``_lent``: absorbed when it is the first late return
        of a reclaimed connection, else PoolError (not lent by this pool, or returned twice)."""
        if self._reclaimed and self._forget_reclaimed(conn):
            return
        raise PoolError(f"{type(conn).__name__} object was not lent by pool {self.name!r}")

    def _forget_reclaimed(self, conn: object) -> bool:
        """True if ``conn`` was reclaimed and this is its holder's (first) late return."""
        ref = self._reclaimed.pop(id(conn), None)
        return ref is not None and ref() is conn

    # ------------------------------------------------------------------ errors

    def _closed_error(self) -> PoolClosed:
        return PoolClosed("the pool is closed", self._ledger.snapshot())

    def _exhausted_error(self, why: str) -> PoolExhausted:
        error = PoolExhausted(why, self._ledger.snapshot())
        self._ledger.error("exhausted", "borrow", error)
        return error

    def _refused_error(self, refusal: tuple[str, str], key: str, prio: int) -> PoolExhausted:
        """The error for a refusal from ``_refusal_locked`` (recorded in phase ``borrow``)."""
        error_type, why = refusal
        if error_type == "exhausted" and self._plain:
            return self._exhausted_error(why)
        snap = self._ledger.snapshot()
        error: PoolExhausted
        if error_type == "quota_exceeded":
            error = PoolQuotaExceeded(why, snap)
        elif error_type == "shed":
            error = PoolShed(why, snap)
        else:
            error = PoolExhausted(why, snap)
        if self._shares.tenants_on:
            self._shares.failed(key, error_type)
        self._error_locked(error_type, "borrow", error, key, prio, None)
        return error

    def _timeout_error(self, t0: float, timeout: float) -> PoolTimeout:
        error = PoolTimeout(f"no connection available within {timeout:g}s", self._ledger.snapshot())
        cause = self._backoff.last_error
        if cause is not None:
            error.__cause__ = cause
        return error

    def _log_destroy_failure(self, exc: BaseException) -> None:
        log_once(
            _log,
            f"pool-destroy:{self.name}",
            "poolmon: pool %s: closing a connection failed: %s (further failures not logged)",
            self.name,
            scrub(f"{type(exc).__name__}: {exc}"),
        )

    def _log_create_failure(self, now: float, delay: float) -> None:
        self._backoff.log_failure(_log, self.name, now, delay)


class _Strong:
    """A strong stand-in for a weak reference (for resources that refuse weak references)."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


def _forget_on_death(table: dict[int, Callable[[], object]], key: int) -> Callable[[object], None]:
    def forget(ref: object) -> None:
        if table.get(key) is ref:
            table.pop(key, None)

    return forget
