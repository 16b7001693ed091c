"""The registry of known pools.

Shims and ``poolmon.Pool`` register a ledger per pool; exporters and ``top`` read
:meth:`PoolRegistry.snapshot`. The registry holds each pool *object* only weakly: when the
application drops a pool, its ledger leaves the registry with it. Names are made unique within a
registry by suffixing ``#2``, ``#3``... in registration order, so names stay stable across restarts
of the same program (no random ids) while two pools to one backend never collide in labels.

The default registry is replaceable (:func:`set_default_registry`) like prometheus_client's.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from poolmon.core.clock import Clock, system_clock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger, Subscriber
from poolmon.core.selfmetrics import SelfMetrics
from poolmon.core.snapshot import PoolSnapshot

__all__ = ["PoolRegistry", "get_default_registry", "set_default_registry", "snapshot"]


class PoolRegistry:
    """Known pools and the subscribers that should see all of their events."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ledgers: dict[str, PoolLedger] = {}
        self._owners: dict[str, weakref.ref[object]] = {}
        self._subscribers: tuple[Subscriber, ...] = ()
        # Pools whose owner was collected, not yet dropped from _ledgers (see _owner_gone).
        self._gone: deque[tuple[str, weakref.ref[PoolLedger]]] = deque()
        self.self_metrics: Final = SelfMetrics()
        _all_registries.add(self)

    @property
    def clock(self) -> Clock:
        return self._clock

    def register(
        self,
        identity: PoolIdentity,
        *,
        owner: object | None = None,
        max_size: int | None = None,
        min_size: int | None = None,
        idle_max: int | None = None,
        clock: Clock | None = None,
        stack_sample_every: int = 0,
        open_fields: Mapping[str, Any] | None = None,
    ) -> PoolLedger:
        """Create and register the ledger of a new pool.

        ``owner`` (the pool object) is held weakly; when it is collected the ledger is dropped.
        Without an owner the ledger stays until :meth:`unregister`.
        """
        with self._lock:
            self._drop_gone()
            name = self._unique_name(identity.name)
            ledger = PoolLedger(
                identity.with_name(name),
                max_size=max_size,
                min_size=min_size,
                idle_max=idle_max,
                clock=clock or self._clock,
                self_metrics=self.self_metrics,
                stack_sample_every=stack_sample_every,
                open_fields=open_fields,
            )
            self._ledgers[name] = ledger
            if owner is not None:
                self._owners[name] = weakref.ref(owner, self._owner_gone(name, ledger))
            subscribers = self._subscribers
        for subscriber in subscribers:
            ledger.subscribe(subscriber)
        return ledger

    def _owner_gone(self, name: str, ledger: PoolLedger) -> Callable[[weakref.ref[object]], None]:
        ledger_ref = weakref.ref(ledger)

        def drop(_: weakref.ref[object]) -> None:
            # A weakref callback runs inside garbage collection, which can start on any
            # allocation: also one this very thread makes while it holds self._lock (a plain
            # Lock, so waiting for it here would deadlock). So only queue the pool (deque.append
            # is atomic) and drop it now if the lock is free; otherwise the lock's next holder
            # drops it before reading _ledgers.
            self._gone.append((name, ledger_ref))
            if self._lock.acquire(blocking=False):
                try:
                    self._drop_gone()
                finally:
                    self._lock.release()

        return drop

    def _drop_gone(self) -> None:
        """Forget the pools whose owners were collected. Call with ``self._lock`` held."""
        while self._gone:
            name, ledger_ref = self._gone.popleft()
            if self._ledgers.get(name) is ledger_ref():
                del self._ledgers[name]
                self._owners.pop(name, None)

    def _unique_name(self, base: str) -> str:
        if base not in self._ledgers:
            return base
        n = 2
        while f"{base}#{n}" in self._ledgers:
            n += 1
        return f"{base}#{n}"

    def unregister(self, ledger: PoolLedger) -> None:
        """Forget a pool (its metrics disappear from the next collection)."""
        with self._lock:
            self._drop_gone()
            if self._ledgers.get(ledger.name) is ledger:
                del self._ledgers[ledger.name]
                self._owners.pop(ledger.name, None)

    def ledgers(self) -> tuple[PoolLedger, ...]:
        with self._lock:
            self._drop_gone()
            return tuple(self._ledgers.values())

    def get(self, name: str) -> PoolLedger | None:
        with self._lock:
            self._drop_gone()
            return self._ledgers.get(name)

    def snapshot(self, leak_threshold: float | None = None) -> list[PoolSnapshot]:
        """One snapshot per known pool, in registration order."""
        return [ledger.snapshot(leak_threshold) for ledger in self.ledgers()]

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Send every event of every pool (known now or later) to ``subscriber``.

        Returns a function that unsubscribes it.
        """
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
            ledgers = tuple(self._ledgers.values())
        for ledger in ledgers:
            ledger.subscribe(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not subscriber)
                current = tuple(self._ledgers.values())
            for ledger in current:
                ledger.unsubscribe(subscriber)

        return unsubscribe

    def clear(self) -> None:
        """Forget every pool and subscriber (tests)."""
        with self._lock:
            self._ledgers.clear()
            self._owners.clear()
            self._gone.clear()
            self._subscribers = ()
        self.self_metrics.reset()

    def after_fork_in_child(self) -> None:
        """Called in a forked child: a fresh lock, and each ledger set up for the child
        (:meth:`PoolLedger.after_fork_in_child`)."""
        self._lock = threading.Lock()
        for ledger in self._ledgers.values():
            ledger.after_fork_in_child()


_all_registries: weakref.WeakSet[PoolRegistry] = weakref.WeakSet()
_default_lock = threading.Lock()
_default: PoolRegistry | None = None


def get_default_registry() -> PoolRegistry:
    """The registry shims and pools use when none is given (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PoolRegistry()
        return _default


def set_default_registry(registry: PoolRegistry) -> PoolRegistry:
    """Replace the default registry; returns the previous one (tests, embedding)."""
    global _default
    with _default_lock:
        previous = _default if _default is not None else PoolRegistry()
        _default = registry
    return previous


def snapshot(registry: PoolRegistry | None = None) -> list[PoolSnapshot]:
    """Snapshots of every pool in ``registry`` (default: the default registry)."""
    return (registry or get_default_registry()).snapshot()


def _reinit_after_fork() -> None:
    for registry in list(_all_registries):
        registry.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)
