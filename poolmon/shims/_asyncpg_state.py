"""State of the asyncpg shim: pools, their identity, and the connection table.

asyncpg's ``Pool`` has ``__slots__`` and no ``__weakref__``; its holders and connections have
``__slots__`` with ``__weakref__``. So poolmon keeps its own tables instead of attributes:

* ``_POOLS``: ``id(pool)`` -> (ledger, weak reference to the pool's first holder). The holder
  check tells a live pool from a new one at a reused address (``id()`` is reused at once); the
  holder dies with its pool, and a finalizer on it then unregisters the ledger;
* ``_CONNS``: ``id(connection)`` -> :class:`ConnEntry` (ledger, cid, the pool and the connection
  by weak reference). The entry is found by one dict lookup on an int (the borrow and return
  hooks run on every acquire) and is valid only while its weak reference still gives that
  connection; the reference's callback removes it when asyncpg drops the connection.

Everything runs on the pool's event-loop thread; ``STATE.lock`` guards first sight of a pool.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from poolmon.core.identity import PoolIdentity, identity_from_url, server_identity
from poolmon.core.lane import LaneProtocol
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import remember_secret
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "CONNS",
    "STATE",
    "ConnEntry",
    "adopt_conn",
    "conn_entry",
    "detach_all",
    "drop_conn",
    "forget_pool",
    "identity_for_pool",
    "ledger_of",
    "sweep",
    "track_conn",
]

#: The asyncpg shim's one state: patches, registry, the error absorber.
STATE: Final = ShimState("asyncpg")


class ConnEntry(NamedTuple):
    ledger: PoolLedger
    cid: int
    pool: Callable[[], Any]
    con: Callable[[], Any]
    #: ``ledger.borrow``/``ledger.release``, bound once (the per-acquire hooks call them).
    borrow: Callable[..., None]
    release: Callable[..., None]
    #: The ledger's lane and clock: while the lane is open, the hooks record through the lane
    #: protocol's own two calls (poolmon.core.lane), one frame less per borrow and return.
    lane: LaneProtocol
    now: Callable[[], float]


_POOLS: dict[int, tuple[PoolLedger, Any, Any]] = {}
_CONNS: dict[int, ConnEntry] = {}
#: The connection table, for the per-acquire hook's one lookup. An entry exists only while its
#: connection is alive: the weak reference's callback removes it when the connection is freed,
#: which is before CPython can reuse its id (so an entry found by id is that connection's).
CONNS: Final = _CONNS


def identity_for_pool(pool: Any) -> PoolIdentity:
    """``postgresql://host:port/database`` from the DSN or keyword arguments; no credentials."""
    kwargs = dict(pool._connect_kwargs or {})
    remember_secret(kwargs.get("password") if isinstance(kwargs.get("password"), str) else None)
    version = installed_version("asyncpg")
    args = pool._connect_args or ()
    dsn = args[0] if args else kwargs.get("dsn")
    host = kwargs.get("host")
    port = kwargs.get("port")
    database = kwargs.get("database")
    if isinstance(dsn, str) and dsn:
        parts = urlsplit(dsn)
        if parts.password:
            remember_secret(parts.password)
        base = identity_from_url(dsn, system="postgresql", library="asyncpg")
        host = host or base.server_address
        port = port or base.server_port
        database = database or base.namespace
    if isinstance(host, (list, tuple)):
        host = host[0] if host else None
    try:
        port_num: int | None = int(port) if port is not None else 5432
    except (TypeError, ValueError):
        port_num = None
    host_s = str(host) if host else "localhost"
    db = str(database) if database else None
    return server_identity(
        "postgresql", host_s, port_num, db, library="asyncpg", library_version=version
    )


def _first_holder(pool: Any) -> Any:
    holders = pool._holders
    return holders[0] if holders else None


def ledger_of(pool: Any) -> PoolLedger | None:
    """The pool's ledger, registering it on first sight (None: not attachable)."""
    key = id(pool)
    found = _POOLS.get(key)
    holder = _first_holder(pool)
    if found is not None and found[1]() is holder and holder is not None:
        return found[0]
    if holder is None:
        return None  # not initialised yet: nothing to attach to
    try:
        with STATE.lock:
            found = _POOLS.get(key)
            if found is not None and found[1]() is holder:
                return found[0]
            registry = STATE.target_registry()
            ledger = registry.register(
                identity_for_pool(pool), max_size=pool._maxsize, min_size=pool._minsize
            )
            # The holder dies with the pool: then forget the ledger (asyncpg pools cannot be
            # weakly referenced themselves).
            finalizer = weakref.finalize(holder, _gone, key, ledger, registry)
            _POOLS[key] = (ledger, weakref.ref(holder), finalizer)
        for ch in list(pool._holders):
            con = ch._con
            if con is not None and not con.is_closed() and conn_entry(con) is None:
                adopt_conn(con, ledger, pool)
        return ledger
    except Exception as exc:
        STATE.absorb(exc, "attach")
        return None


def _gone(key: int, ledger: PoolLedger, registry: Any) -> None:
    found = _POOLS.get(key)
    if found is not None and found[0] is ledger:
        _POOLS.pop(key, None)
    ledger.retire("pool_closed")
    registry.unregister(ledger)


def _pool_ref(pool: Any) -> Callable[[], Any]:
    holder_ref = weakref.ref(_first_holder(pool))

    def deref() -> Any:
        holder = holder_ref()
        return None if holder is None else holder._pool

    return deref


def _forget(key: int) -> Callable[[Any], None]:
    def gone(ref: Any) -> None:
        entry = _CONNS.get(key)
        if entry is not None and entry.con is ref:
            _CONNS.pop(key, None)

    return gone


def track_conn(con: Any, ledger: PoolLedger, cid: int, pool: Any) -> ConnEntry:
    key = id(con)
    ref = weakref.ref(con, _forget(key))
    entry = ConnEntry(
        ledger, cid, _pool_ref(pool), ref, ledger.borrow, ledger.release, ledger.lane, ledger.now
    )
    _CONNS[key] = entry
    return entry


def adopt_conn(con: Any, ledger: PoolLedger, pool: Any) -> ConnEntry | None:
    """A connection opened before poolmon saw its pool (no create event)."""
    if con is None or con.is_closed():
        return None
    return track_conn(con, ledger, ledger.adopt(), pool)


def conn_entry(con: Any) -> ConnEntry | None:
    entry = _CONNS.get(id(con))
    return entry if entry is not None and entry.con() is con else None


def drop_conn(con: Any) -> ConnEntry | None:
    entry = conn_entry(con)
    if entry is not None:
        _CONNS.pop(id(con), None)
    return entry


def sweep(pool: Any, ledger: PoolLedger) -> None:
    """Evict this pool's tracked connections no holder holds any more: asyncpg replaced them
    without closing them through ``_cleanup`` (found closed at acquire: ``broken``; of an
    expired generation, closed later by a task: ``other``). Runs before each new connect."""
    held = {id(h._con) for h in pool._holders if h._con is not None}
    for key, entry in list(_CONNS.items()):
        if entry.ledger is not ledger or key in held:
            continue
        con = entry.con()
        _CONNS.pop(key, None)
        closed = con is None or con.is_closed()
        ledger.evict(entry.cid, "broken" if closed else "other")


def forget_pool(pool: Any, *, close: bool) -> None:
    """The pool is closed: close its ledger. It stays registered (a closed pool is shown as
    such) until the pool is garbage collected (the holder finalizer unregisters it)."""
    found = _POOLS.get(id(pool))
    if found is None or found[1]() is not _first_holder(pool):
        return
    if close:
        found[0].close()


def detach_all() -> None:
    """Switch off: unregister every ledger and forget every connection."""
    registry = STATE.target_registry()
    for ledger, _ref, finalizer in list(_POOLS.values()):
        try:
            finalizer.detach()
            registry.unregister(ledger)
        except Exception as exc:
            STATE.absorb(exc, "detach")
    _POOLS.clear()
    _CONNS.clear()
    STATE.take_pools()
