"""Shared machinery of the psycopg_pool and psycopg2.pool shims: per-pool trackers and tags.

Bookkeeping lives in attributes on the library's own objects, so the hot path does two attribute
reads instead of a global weak-keyed map (a ``WeakKeyDictionary`` lookup builds a weakref per
call). They are read and written with getattr/setattr only, never through ``__dict__``
(:mod:`poolmon.shims._attrs` says why):

* each pool gets a :class:`PoolTracker` in ``pool._poolmon_tracker`` (``TRACKER_ATTR``), created on
  first sight (pools created before ``instrument()`` are seen lazily, their idle connections
  adopted), and, where the shim asks for one, a pool :class:`~poolmon.core.lane.Link` in
  ``pool._poolmon_link`` (``LINK_ATTR``): what the compiled hooks read of the pool, in one lookup
  (``key`` the tracker, ``items`` the idle container, and for psycopg2 ``table`` the keyed tags);
* each connection gets a *tag*, a connection Link (``lane``, ``cid``, ``key`` = the tracker) in
  ``conn._poolmon_conn`` (``CONN_ATTR``). The tracker in the tag makes a tag from an earlier
  instrumentation (or another pool) harmless: it is only trusted when it names the current
  tracker. The lane lets the compiled return hook record a return from the tag alone; a dropped
  tracker's lane is marked ``retired`` (:meth:`TrackingState.forget_pools`), which is how that
  hook knows the tag is stale. Connection ids come from the ledger, never ``id()``. Connections
  without a ``__dict__`` (psycopg2's C type) use :class:`KeyedPoolTracker` instead.

Pools are held weakly (registry ``owner=`` and a ``WeakSet`` here); a tracker never refers back
to its pool, so instrumenting creates no reference cycle that would delay a pool's finaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from poolmon.core.compiled import new_id_table, new_link
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.shims._attrs import pop_attr
from poolmon.shims._runtime import ShimState

__all__ = [
    "CONN_ATTR",
    "LINK_ATTR",
    "TRACKER_ATTR",
    "KeyedPoolTracker",
    "PoolTracker",
    "TrackingState",
    "sync_connect",
    "tag_of",
]

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

    __slots__ = ("borrow", "evict", "lane", "ledger", "now", "release", "state", "undo")

    def __init__(self, ledger: PoolLedger, state: TrackingState) -> None:
        self.ledger = ledger
        self.lane = ledger.lane
        self.state = state
        self.now = ledger.now
        self.borrow = ledger.borrow
        self.release = ledger.release
        self.evict = ledger.evict
        #: What puts the pool back as it was, run in reverse order when poolmon lets go of it
        #: (its own connect arguments, see TrackingState ``label``; psycopg2's lent dict).
        self.undo: list[Callable[[], None]] = []

    def conn_id(self, conn: Any) -> int:
        """The ledger id of ``conn``; a connection never seen before is adopted (no create)."""
        cid = self.known_id(conn)
        return cid if cid is not None else self.adopt(conn)

    def known_id(self, conn: Any) -> int | None:
        """The ledger id of ``conn`` if this tracker tagged it, else None."""
        tag = getattr(conn, CONN_ATTR, None)
        if tag is not None and tag.key is self:
            cid: int = tag.cid
            return cid
        return None

    def _tag(self, conn: Any, cid: int) -> None:
        setattr(conn, CONN_ATTR, new_link(self.lane, cid, key=self))

    def created(self, conn: Any, t0: float) -> int:
        """``conn`` was just opened (started at ``t0``): record it and tag it."""
        cid = self.ledger.create(t0)
        self._tag(conn, cid)
        return cid

    def adopt(self, conn: Any, age: float = 0.0) -> int:
        cid = self.ledger.adopt(age=max(0.0, age))
        self._tag(conn, cid)
        return cid

    def discard(self, conn: Any, cid: int, reason: str) -> None:
        """The pool let go of ``conn``: evict it (the tag dies with the connection)."""
        self.evict(cid, reason)


class KeyedPoolTracker(PoolTracker):
    """A tracker for connections that take no attributes: ``id(conn) -> Link(cid, key=conn)``.

    The entry holds the connection itself (as its ``key``), so its ``id()`` cannot be reused while
    the entry exists, and the identity check makes a stale entry impossible to mistake for another
    connection. Entries leave on :meth:`discard`, i.e. when the pool lets go of the connection;
    until then the pool holds it anyway, so this keeps nothing alive that the pool would not.
    ``ids`` mirrors the entries as ``id(conn) -> ledger id`` for the compiled lend table (None on
    the Python path): written with them, so it names only connections alive in the ledger (L3).
    """

    __slots__ = ("conns", "ids")

    def __init__(self, ledger: PoolLedger, state: TrackingState) -> None:
        super().__init__(ledger, state)
        #: ``id(conn) -> Link(lane, cid, key=conn)``.
        self.conns: dict[int, Any] = {}
        #: ``id(conn) -> cid``, a ``poolmon._hot.Borrowed`` on a compiled lane, else None.
        self.ids: Any = new_id_table(self.lane)

    def known_id(self, conn: Any) -> int | None:
        entry = self.conns.get(id(conn))
        if entry is not None and entry.key is conn:
            cid: int = entry.cid
            return cid
        return None

    def _tag(self, conn: Any, cid: int) -> None:
        self.conns[id(conn)] = new_link(self.lane, cid, key=conn)
        if self.ids is not None:
            self.ids[id(conn)] = cid

    def discard(self, conn: Any, cid: int, reason: str) -> None:
        entry = self.conns.get(id(conn))
        if entry is not None and entry.key is conn:
            del self.conns[id(conn)]
            if self.ids is not None:
                self.ids.pop(id(conn), None)
        self.evict(cid, reason)


def tag_of(conn: Any) -> Any:
    """The tag (a connection Link: lane, cid, key = tracker) poolmon put on ``conn``, if any
    (tests, diagnostics)."""
    return getattr(conn, CONN_ATTR, None)


class TrackingState(ShimState):
    """The runtime's :class:`ShimState` with per-pool trackers (psycopg_pool, psycopg2).

    ``identity`` and ``limits`` are the library-specific parts: how to name a pool and read its
    configured ``(max, min, idle_max)`` sizes. ``idle`` lists a pool's idle connections with their
    ages, for adoption. ``link``, when given, makes the pool Link stored in ``pool._poolmon_link``
    for the compiled hooks (which read it instead of the tracker). ``label_connections``, when
    given, labels the connections the pool opens from first sight on with its name (PostgreSQL
    ``fallback_application_name``, poolmon.backends.labels) and returns the undo.
    """

    def __init__(
        self,
        label: str,
        *,
        identity: Callable[[Any], PoolIdentity],
        limits: Callable[[Any], tuple[int | None, int | None, int | None]],
        idle: Callable[[Any], Iterable[tuple[Any, float]]],
        tracker_class: type[PoolTracker] = PoolTracker,
        link: Callable[[Any, PoolTracker], Any] | None = None,
        label_connections: Callable[[Any, str], Callable[[], None] | None] | None = None,
    ) -> None:
        super().__init__(label)
        self._label_connections = label_connections
        self._identity = identity
        self._limits = limits
        self._idle = idle
        self._tracker_class = tracker_class
        self._link = link

    def track(self, pool: Any) -> PoolTracker | None:
        """The tracker of ``pool``, registering it on first sight. None when inactive or failing.

        May run with the pool's own lock held (psycopg_pool's null pool connects under it), so it
        never takes that lock: the idle connections are copied with one ``tuple()`` call on the
        deque/list, which CPython performs without releasing the GIL, i.e. atomically with
        respect to the pool's other threads.
        """
        try:
            with self.lock:
                tracker: PoolTracker | None = getattr(pool, TRACKER_ATTR, None)
                if tracker is not None or self.registry is None:
                    return tracker
                max_size, min_size, idle_max = self._limits(pool)
                ledger = self.target_registry().register(
                    self._identity(pool),
                    owner=pool,
                    max_size=max_size,
                    min_size=min_size,
                    idle_max=idle_max,
                )
                tracker = self._tracker_class(ledger, self)
                if self._label_connections is not None:
                    # Before the pool connects (track runs from _open or the first _connect):
                    # its connections carry the pool's name to the backend's own view.
                    unlabel = self._label_connections(pool, ledger.name)
                    if unlabel is not None:
                        tracker.undo.append(unlabel)
                setattr(pool, TRACKER_ATTR, tracker)
                if self._link is not None:
                    # After the tracker: the fast path never sees a link without it.
                    setattr(pool, LINK_ATTR, self._link(pool, tracker))
                self.pools.add(pool)
            for conn, age in self._idle(pool):
                if tracker.known_id(conn) is None:
                    tracker.adopt(conn, age)
            return tracker
        except Exception as exc:
            self.absorb(exc)
            return None

    def tracker_of(self, pool: Any) -> PoolTracker | None:
        """The tracker of ``pool``: its attribute when set (a plain attribute read, the cheapest
        there is), else :meth:`track` (first sight)."""
        try:
            tracker: PoolTracker = pool._poolmon_tracker  # TRACKER_ATTR
        except AttributeError:
            return self.track(pool)
        return tracker

    def connected(self, tracker: PoolTracker, t0: float, conn: Any) -> None:
        """A connect that started at ``t0`` gave ``conn``: record the create, tag it."""
        try:
            tracker.created(conn, t0)
        except Exception as exc:
            self.absorb(exc, "connect")

    def connect_failed(self, tracker: PoolTracker, t0: float, exc: BaseException) -> None:
        """A connect that started at ``t0`` raised ``exc`` (re-raised by the caller)."""
        self.create_failed(tracker.ledger, t0, exc, "connect")

    def set_limits(self, pool: Any) -> None:
        tracker: PoolTracker | None = getattr(pool, TRACKER_ATTR, None)
        if tracker is not None:
            max_size, min_size, idle_max = self._limits(pool)
            tracker.ledger.set_limits(max_size=max_size, min_size=min_size, idle_max=idle_max)

    def forget_pools(self) -> None:
        """Detach (the shim's uninstall): forget every tracked pool, trackers removed from the
        pools, ledgers unregistered.

        A pool keeps working untouched; if instrumented again it is seen afresh (old connection
        tags name the old tracker, so they are ignored and the connections re-adopted).
        """
        registry = self.target_registry()
        pools = self.take_pools()
        for pool in pools:
            pop_attr(pool, LINK_ATTR)  # first: the fast path stops before the tracker goes
            tracker = pop_attr(pool, TRACKER_ATTR)
            if tracker is not None:
                tracker.lane.retired = True  # connection tags naming it are stale from now on
                while tracker.undo:
                    try:
                        tracker.undo.pop()()  # e.g. the pool's own connect arguments, exactly
                    except Exception as exc:
                        self.absorb(exc, "detach")
                registry.unregister(tracker.ledger)


def sync_connect(original: Callable[..., Any], st: TrackingState) -> Callable[..., Any]:
    """The create hook of a synchronous pool's connect method (psycopg_pool ``_connect``,
    psycopg2 ``_connect``): not a hot path, so it forwards whatever arguments it gets."""

    def _connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker = st.tracker_of(self)
        if tracker is None:
            return original(self, *args, **kwargs)
        t0 = tracker.now()
        try:
            conn = original(self, *args, **kwargs)
        except Exception as exc:
            st.connect_failed(tracker, t0, exc)
            raise
        st.connected(tracker, t0, conn)
        return conn

    return _connect
