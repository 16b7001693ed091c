"""Shared machinery of the psycopg_pool and psycopg2.pool shims: per-pool trackers and tags.

Bookkeeping lives in attributes on the library's own objects, so the hot path does two attribute
reads instead of a global weak-keyed map (a ``WeakKeyDictionary`` lookup builds a weakref per
call). They are read and written with getattr/setattr only, never through ``__dict__``
(:mod:`poolmon.shims._attrs` says why):

* each pool gets a :class:`PoolTracker` in ``pool._poolmon_tracker`` (``TRACKER_ATTR``), created on first sight
  (pools created before ``instrument()`` are seen lazily, their idle connections adopted), and,
  where the shim asks for one, a *link* tuple in ``pool._poolmon_link`` (``LINK_ATTR``): what the
  compiled fast path reads of the pool, in one lookup (psycopg_pool: tracker, lane, idle deque);
* each connection gets a *tag* ``(tracker, conn_id, lane)`` in ``conn._poolmon_conn``
  (``CONN_ATTR``). The tracker in the tag makes a tag from an earlier instrumentation (or another
  pool) harmless: it is only trusted when it names the current tracker. The lane lets the
  compiled return hook record a return from the tag alone; a dropped tracker's lane is marked
  ``retired`` (:meth:`ShimState.stop`), which is how that hook knows the tag is stale.
  Connection ids come from the ledger, never ``id()``. Connections without a ``__dict__``
  (psycopg2's C type) use :class:`KeyedPoolTracker` instead.

Pools are held weakly (registry ``owner=`` and a ``WeakSet`` here); a tracker never refers back
to its pool, so instrumenting creates no reference cycle that would delay a pool's finaliser.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final

from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.shims._attrs import pop_attr
from poolmon.shims._patch import PatchSet

__all__ = [
    "CONN_ATTR",
    "LINK_ATTR",
    "TRACKER_ATTR",
    "KeyedPoolTracker",
    "PoolTracker",
    "ShimState",
    "tag_of",
]

_log = logging.getLogger("poolmon")

#: Attribute names poolmon sets on library objects (pools and connections). The hot-path wrappers
#: spell them out as plain attribute reads (``pool._poolmon_tracker``), the cheapest read there
#: is; keep the literals there in sync with these.
TRACKER_ATTR: Final = "_poolmon_tracker"
CONN_ATTR: Final = "_poolmon_conn"
LINK_ATTR: Final = "_poolmon_link"


class PoolTracker:
    """What the wrappers need about one pool: its ledger and pre-bound event methods.

    Bound methods are stored once so the hot path does one slot read per event instead of an
    attribute lookup plus a method binding. ``lane`` is the ledger's lock-free hot lane
    (:mod:`poolmon.core.lane`): the getconn/putconn wrappers write to it directly while it is open.
    """

    __slots__ = ("borrow", "evict", "lane", "ledger", "now", "release", "state")

    def __init__(self, ledger: PoolLedger, state: ShimState) -> None:
        self.ledger = ledger
        self.lane = ledger.lane
        self.state = state
        self.now = ledger.now
        self.borrow = ledger.borrow
        self.release = ledger.release
        self.evict = ledger.evict

    def conn_id(self, conn: Any) -> int:
        """The ledger id of ``conn``; a connection never seen before is adopted (no create)."""
        tag = getattr(conn, CONN_ATTR, None)
        if tag is not None and tag[0] is self:
            cid: int = tag[1]
            return cid
        return self.adopt(conn)

    def known_id(self, conn: Any) -> int | None:
        """The ledger id of ``conn`` if this tracker tagged it, else None."""
        tag = getattr(conn, CONN_ATTR, None)
        if tag is not None and tag[0] is self:
            cid: int = tag[1]
            return cid
        return None

    def created(self, conn: Any, t0: float) -> int:
        """``conn`` was just opened (started at ``t0``): record it and tag it."""
        cid = self.ledger.create(t0)
        setattr(conn, CONN_ATTR, (self, cid, self.lane))
        return cid

    def adopt(self, conn: Any, age: float = 0.0) -> int:
        cid = self.ledger.adopt(age=max(0.0, age))
        setattr(conn, CONN_ATTR, (self, cid, self.lane))
        return cid

    def discard(self, conn: Any, cid: int, reason: str) -> None:
        """The pool let go of ``conn``: evict it (the tag dies with the connection)."""
        self.evict(cid, reason)


class KeyedPoolTracker(PoolTracker):
    """A tracker for connections that take no attributes: ``id(conn) -> (conn, conn_id)``.

    The entry holds the connection itself, so its ``id()`` cannot be reused while the entry
    exists, and the identity check makes a stale entry impossible to mistake for another
    connection. Entries leave on :meth:`discard`, i.e. when the pool lets go of the connection;
    until then the pool holds it anyway, so this keeps nothing alive that the pool would not.
    """

    __slots__ = ("conns",)

    def __init__(self, ledger: PoolLedger, state: ShimState) -> None:
        super().__init__(ledger, state)
        #: ``id(conn) -> (conn, conn_id)``; read by the compiled fast path through the pool's
        #: link, so it is one dict for the tracker's whole life (never replaced).
        self.conns: dict[int, tuple[Any, int]] = {}

    def conn_id(self, conn: Any) -> int:
        entry = self.conns.get(id(conn))
        if entry is not None and entry[0] is conn:
            return entry[1]
        return self.adopt(conn)

    def known_id(self, conn: Any) -> int | None:
        entry = self.conns.get(id(conn))
        if entry is not None and entry[0] is conn:
            return entry[1]
        return None

    def created(self, conn: Any, t0: float) -> int:
        cid = self.ledger.create(t0)
        self.conns[id(conn)] = (conn, cid)
        return cid

    def adopt(self, conn: Any, age: float = 0.0) -> int:
        cid = self.ledger.adopt(age=max(0.0, age))
        self.conns[id(conn)] = (conn, cid)
        return cid

    def discard(self, conn: Any, cid: int, reason: str) -> None:
        entry = self.conns.get(id(conn))
        if entry is not None and entry[0] is conn:
            del self.conns[id(conn)]
        self.evict(cid, reason)


def tag_of(conn: Any) -> tuple[PoolTracker, int, Any] | None:
    """The ``(tracker, conn_id, lane)`` tag poolmon put on ``conn``, if any (tests, diagnostics)."""
    tag: tuple[PoolTracker, int, Any] | None = getattr(conn, CONN_ATTR, None)
    return tag


class ShimState:
    """The mutable state of one shim: its patches, registry and the pools it tracks.

    ``identity`` and ``limits`` are the library-specific parts: how to name a pool and read its
    configured ``(max, min, idle_max)`` sizes. ``idle`` lists a pool's idle connections with their
    ages, for adoption. ``link``, when given, makes the tuple stored in ``pool._poolmon_link`` for
    the compiled fast path (which reads it instead of the tracker).
    """

    def __init__(
        self,
        label: str,
        *,
        identity: Callable[[Any], PoolIdentity],
        limits: Callable[[Any], tuple[int | None, int | None, int | None]],
        idle: Callable[[Any], Iterable[tuple[Any, float]]],
        tracker_class: type[PoolTracker] = PoolTracker,
        link: Callable[[Any, PoolTracker], tuple[Any, ...]] | None = None,
    ) -> None:
        self.label = label
        self.patches = PatchSet(label)
        self.registry: PoolRegistry | None = None
        self._identity = identity
        self._limits = limits
        self._idle = idle
        self._tracker_class = tracker_class
        self._link = link
        # Guards first sight only (two threads meeting a new pool must not register it twice);
        # never taken on the hot path, never held while calling into the library.
        self._lock = threading.Lock()
        self._tracked: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def active(self) -> bool:
        return self.registry is not None

    def start(self, registry: PoolRegistry | None) -> None:
        self.registry = registry if registry is not None else get_default_registry()

    def track(self, pool: Any) -> PoolTracker | None:
        """The tracker of ``pool``, registering it on first sight. None when inactive or failing.

        May run with the pool's own lock held (psycopg_pool's null pool connects under it), so it
        never takes that lock: the idle connections are copied with one ``tuple()`` call on the
        deque/list, which CPython performs without releasing the GIL, i.e. atomically with
        respect to the pool's other threads.
        """
        try:
            with self._lock:
                tracker: PoolTracker | None = getattr(pool, TRACKER_ATTR, None)
                if tracker is not None or self.registry is None:
                    return tracker
                max_size, min_size, idle_max = self._limits(pool)
                ledger = self.registry.register(
                    self._identity(pool),
                    owner=pool,
                    max_size=max_size,
                    min_size=min_size,
                    idle_max=idle_max,
                )
                tracker = self._tracker_class(ledger, self)
                setattr(pool, TRACKER_ATTR, tracker)
                if self._link is not None:
                    # After the tracker: the fast path never sees a link without it.
                    setattr(pool, LINK_ATTR, self._link(pool, tracker))
                self._tracked.add(pool)
            for conn, age in self._idle(pool):
                if tracker.known_id(conn) is None:
                    tracker.adopt(conn, age)
            return tracker
        except Exception as exc:
            self.absorb(exc)
            return None

    def set_limits(self, pool: Any) -> None:
        tracker: PoolTracker | None = getattr(pool, TRACKER_ATTR, None)
        if tracker is not None:
            max_size, min_size, idle_max = self._limits(pool)
            tracker.ledger.set_limits(max_size=max_size, min_size=min_size, idle_max=idle_max)

    def stop(self) -> None:
        """Forget every tracked pool: trackers removed from the pools, ledgers unregistered.

        A pool keeps working untouched; if instrumented again it is seen afresh (old connection
        tags name the old tracker, so they are ignored and the connections re-adopted).
        """
        with self._lock:
            registry, self.registry = self.registry, None
            pools = list(self._tracked)
            self._tracked = weakref.WeakSet()
        for pool in pools:
            pop_attr(pool, LINK_ATTR)  # first: the fast path stops before the tracker goes
            tracker = pop_attr(pool, TRACKER_ATTR)
            if tracker is not None:
                try:
                    tracker.lane.retired = True  # connection tags naming it are stale from now on
                except Exception as exc:
                    self.absorb(exc)
            if tracker is not None and registry is not None:
                registry.unregister(tracker.ledger)

    def absorb(self, exc: BaseException) -> None:
        """A failure inside poolmon's own code: count it, log it once, never propagate it."""
        try:
            registry = self.registry or get_default_registry()
            registry.self_metrics.inc("poolmon.shim.errors", self.label)
            log_once(
                _log,
                f"shim:{self.label}:{type(exc).__name__}",
                "poolmon: the %s shim absorbed %s; the pool is unaffected, further failures "
                "are only counted in poolmon_shim_errors_total",
                self.label,
                scrub(f"{type(exc).__name__}: {exc}"),
            )
        except Exception:  # pragma: no cover - logging itself failed; nothing left to do
            pass
