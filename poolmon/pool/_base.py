"""What :class:`~poolmon.pool.Pool` and :class:`~poolmon.pool.AsyncPool` share: configuration,
registration with the recorder, the per-connection record and the lifecycle rules.

The rules are pure functions of an entry and the clock, so both pools (and the tests) apply
exactly the same ones; only waiting and locking differ between threads and asyncio.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from poolmon.core.clock import Clock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.core.snapshot import PoolSnapshot
from poolmon.errors import PoolClosed, PoolExhausted, PoolTimeout
from poolmon.pool.backoff import Backoff
from poolmon.pool.config import PoolConfig

__all__ = ["BasePool", "Entry"]

T = TypeVar("T")

_log = logging.getLogger("poolmon")

#: Reclaimed connections that cannot be weakly referenced are remembered (for their holder's
#: late return) up to this many, oldest forgotten first.
RECLAIMED_KEEP = 256


class Entry(Generic[T]):
    """One physical connection and what the rules need to know about it.

    ``gone`` is set (under the pool's lock) the moment the ledger records the eviction; whoever
    holds the entry next only destroys the resource, and never emits another event for it.
    """

    __slots__ = ("checked", "conn", "destroyed", "doomed", "expires", "gone", "id", "last_used")

    def __init__(self, ident: int, conn: T, now: float, expires: float) -> None:
        self.id = ident
        self.conn = conn
        self.expires = expires
        self.last_used = now  # when it was last returned (idle timeout counts from here)
        self.checked = now  # last return or successful validation (validate_after counts here)
        self.gone = False
        self.destroyed = False
        self.doomed: str | None = None  # eviction reason to apply on return (drain, mark_broken)


class BasePool(Generic[T]):
    """Configuration, identity, ledger and rules; subclasses add the lending machinery."""

    def __init__(
        self,
        config: PoolConfig | None,
        options: Mapping[str, Any],
        *,
        name: str | None,
        identity: PoolIdentity | None,
        factory_identity: object,
        registry: PoolRegistry | None,
        clock: Clock | None,
        rng: Callable[[], float] | None,
    ) -> None:
        unknown = set(options) - PoolConfig.names()
        if unknown:
            raise TypeError(f"unknown pool option(s): {', '.join(sorted(unknown))}")
        cfg = replace(config, **options) if config is not None else PoolConfig(**options)
        self.config = cfg
        self._registry = registry if registry is not None else get_default_registry()
        self._random = rng if rng is not None else random.random
        if identity is None:
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
            max_size=cfg.max_size,
            min_size=cfg.min_size,
            clock=clock,
            stack_sample_every=cfg.stack_sample_every,
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
        start = self._now()
        # Warm-up: when each of the min_size connections may be opened (spread, no storm).
        self._warmup = sorted(
            start + self._random() * cfg.warmup_jitter for _ in range(cfg.min_size)
        )

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
