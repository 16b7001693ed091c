"""State of the SQLAlchemy shim: attaching pools, their identity and limits, connection links.

Bookkeeping lives in plain attributes on SQLAlchemy's own objects (an attribute read is the
cheapest lookup Python has):

* a pool carries ``_poolmon_ledger`` (its :class:`~poolmon.core.ledger.PoolLedger`, ``False``
  when attaching failed) and, for the QueuePool family, ``_poolmon_pool``: a pool
  :class:`~poolmon.core.lane.Link` whose ``items`` is the idle queue's deque (the compiled borrow
  takes its common case only when an idle connection is there, so no wait is possible);
* a ``_ConnectionRecord`` (SQLAlchemy's long-lived slot, which holds one DBAPI connection after
  another) carries ``_poolmon_link``: the Link (lane, cid, key = the ledger) of its *current*
  DBAPI connection, or ``None`` while it has none. Each DBAPI connection is a new physical
  connection with a new id; ``id()`` is never used as an id (CPython reuses it at once);
* ``_ConnectionFairy`` (the per-checkout proxy) gets a class-level property ``_poolmon_link``
  that reads its record's link without a Python frame (``operator.attrgetter``): the compiled
  borrow reads the connection link from what ``Pool.connect`` returns, the fairy;
* a dialect carries ``_poolmon_url``: what its engine's URL says about the server (driver, host,
  port, database; never the username or password) and the engine's ``logging_name``, stamped by
  ``Engine.__init__``. Pools of engines made before ``instrument()`` read the same facts from the
  connect closure ``create_engine`` gave the pool.

Pools are held weakly (:class:`weakref.WeakSet` here, the registry's weak owner reference).
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from poolmon.core.compiled import new_link
from poolmon.core.identity import SYSTEMS, PoolIdentity, derive_name
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import remember_secret, scrub
from poolmon.shims._attrs import drop_attr
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "BY_DBAPI",
    "FAIRY_LINK",
    "PING_FAILED",
    "POOL_LEDGER",
    "POOL_LINK",
    "REC_LINK",
    "STATE",
    "URL_STAMP",
    "ServerInfo",
    "adopt_record",
    "attach",
    "detach_all",
    "evict_record",
    "identity_for_pool",
    "install_fairy_property",
    "limits_of",
    "link_record",
    "live_link",
    "remove_fairy_property",
    "stamp_engine",
]

POOL_LEDGER: Final = "_poolmon_ledger"
POOL_LINK: Final = "_poolmon_pool"
REC_LINK: Final = "_poolmon_link"
#: The fairy's class-level property reading its record's link (the compiled borrow's conn_link).
FAIRY_LINK: Final = REC_LINK
#: Set on a record whose pre-ping failed: the eviction that follows is ``failed_validation``.
PING_FAILED: Final = "_poolmon_ping_failed"
URL_STAMP: Final = "_poolmon_url"

#: The SQLAlchemy shim's one state: patches, registry, attached pools, the error absorber.
STATE: Final = ShimState("sqlalchemy")

#: id(DBAPI connection) -> (that connection, its record), for the pre-ping hook, which gets the
#: DBAPI connection only. Entries are added at create/adopt and removed at eviction, so the map
#: holds exactly the live connections poolmon tracks (single dict operations: atomic).
BY_DBAPI: Final[dict[int, tuple[Any, Any]]] = {}


class ServerInfo(NamedTuple):
    """What an engine's URL says about its server: no username, no password."""

    drivername: str
    dialect: str
    host: str | None
    port: int | None
    database: str | None
    engine_name: str | None


# ---------------------------------------------------------------------------- identity


def _port(value: object) -> int | None:
    try:
        return None if value is None else int(str(value))
    except ValueError:
        return None


def stamp_engine(engine: Any) -> None:
    """Remember on the engine's dialect what its URL says (credentials remembered for scrubbing
    only); its pools, including those ``engine.dispose()`` recreates, share that dialect."""
    url = engine.url
    remember_secret(url.password)
    name = getattr(engine, "logging_name", None)
    info = ServerInfo(
        drivername=str(url.drivername),
        dialect=str(url.get_backend_name()),
        host=url.host,
        port=_port(url.port),
        database=url.database,
        engine_name=str(name) if name else None,
    )
    with contextlib.suppress(AttributeError, TypeError):
        setattr(engine.dialect, URL_STAMP, info)


def _from_creator(pool: Any) -> ServerInfo | None:
    # create_engine's connect() closure holds the dialect and the connect kwargs (cparams).
    creator = getattr(pool, "_creator_arg", None)
    cells = getattr(creator, "__closure__", None) or ()
    dialect: Any = None
    params: Mapping[str, Any] | None = None
    for cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, Mapping) and params is None:
            params = value
        elif hasattr(value, "create_connect_args") and hasattr(value, "driver"):
            dialect = value
    if dialect is None:
        return None
    params = params or {}
    for key in ("password", "passwd"):
        remember_secret(params.get(key))
    database = params.get("dbname") or params.get("database") or params.get("db")
    return ServerInfo(
        drivername=f"{dialect.name}+{dialect.driver}",
        dialect=str(dialect.name),
        host=params.get("host"),
        port=_port(params.get("port")),
        database=None if database is None else str(database),
        engine_name=None,
    )


def identity_for_pool(pool: Any) -> PoolIdentity:
    """``pool_logging_name``, else the engine's ``logging_name``, else the URL without
    credentials: ``postgresql+psycopg://host:5432/db``."""
    info = getattr(getattr(pool, "_dialect", None), URL_STAMP, None)
    if not isinstance(info, ServerInfo):
        info = _from_creator(pool)
    version = installed_version("sqlalchemy")
    system = "generic"
    name: str | None = getattr(pool, "_orig_logging_name", None) or None
    host = port = database = None
    if info is not None:
        system = info.dialect if info.dialect in SYSTEMS else "generic"
        host, port, database = info.host, info.port, info.database
        name = name or info.engine_name
        if name is None:
            if host is None and database:
                name = scrub(f"{info.drivername}:///{database}")  # sqlite files
            else:
                name = derive_name(info.drivername, host, port, database)
    if name is None:
        name = f"sqlalchemy://{type(pool).__name__}"
    return PoolIdentity(
        name=scrub(str(name)),
        system=system,
        server_address=None if host is None else str(host),
        server_port=port,
        namespace=database,
        library="sqlalchemy",
        library_version=version,
    )


def limits_of(pool: Any) -> tuple[int | None, int | None]:
    """(max, idle_max): QueuePool ``pool_size + max_overflow`` and ``pool_size`` (spec 11.1)."""
    queue = getattr(pool, "_pool", None)
    kind = type(pool).__name__
    if queue is not None and hasattr(pool, "_max_overflow"):
        size = int(queue.maxsize)
        overflow = int(pool._max_overflow)
        if size <= 0:
            return None, None
        return (None if overflow < 0 else size + overflow), size
    if kind in ("StaticPool", "AssertionPool"):
        return 1, 1
    per_thread: Any = getattr(pool, "size", None)
    if isinstance(per_thread, int):  # SingletonThreadPool: one connection per thread, up to size
        return per_thread, per_thread
    if kind == "NullPool":
        return None, 0
    return None, None


# ---------------------------------------------------------------------------- links


def live_link(record: Any, ledger: Any = None) -> Any:
    """The record's link if it names a current (not retired) lane, and ``ledger`` when given."""
    link = getattr(record, REC_LINK, None)
    if link is None or link.lane.retired or (ledger is not None and link.key is not ledger):
        return None
    return link


def link_record(record: Any, ledger: PoolLedger, cid: int) -> None:
    """``record`` now holds physical connection ``cid`` (its current DBAPI connection)."""
    conn = record.dbapi_connection
    setattr(record, REC_LINK, new_link(ledger.lane, cid, key=ledger))
    if conn is not None:
        BY_DBAPI[id(conn)] = (conn, record)


def adopt_record(ledger: PoolLedger, record: Any) -> int | None:
    """Track a record's connection opened before poolmon saw it (no create event)."""
    if record.dbapi_connection is None:
        return None
    cid = ledger.adopt()
    link_record(record, ledger, cid)
    return cid


def evict_record(record: Any, link: Any, reason: str) -> None:
    """The record's current connection leaves the pool for ``reason``."""
    setattr(record, REC_LINK, None)
    conn = record.dbapi_connection
    entry = BY_DBAPI.get(id(conn))
    if entry is not None and entry[0] is conn:
        BY_DBAPI.pop(id(conn), None)
    drop_attr(record, PING_FAILED)
    link.key.evict(link.cid, reason)


# ---------------------------------------------------------------------------- attaching


def _idle_items(pool: Any) -> Any:
    """The idle container of a QueuePool-family pool (a deque), else None."""
    queue = getattr(pool, "_pool", None)
    if queue is None or not hasattr(pool, "_max_overflow"):
        return None
    items = getattr(queue, "queue", None)  # sqlalchemy.util.queue.Queue
    if items is None:
        inner = getattr(queue, "_queue", None)  # AsyncAdaptedQueue: an asyncio.Queue
        items = getattr(inner, "_queue", None)
    return items


def _idle_records(pool: Any) -> list[Any]:
    items = _idle_items(pool)
    if items is None:
        return []
    mutex = getattr(pool._pool, "mutex", None)
    if mutex is not None:
        with mutex:
            return list(items)
    return list(items)  # asyncio: we run on the loop's thread, nothing changes it meanwhile


def attach(pool: Any) -> PoolLedger | None:
    """The pool's ledger, registering the pool on first sight; ``None`` if that failed.

    Idle connections of a pool made before ``instrument()`` are adopted here (no create event:
    poolmon did not see them open); lent-out ones are adopted at their next checkout.
    """
    try:
        with STATE.lock:
            ledger = getattr(pool, POOL_LEDGER, None)
            if ledger is not None:
                return ledger or None
            max_size, idle_max = limits_of(pool)
            ledger = STATE.target_registry().register(
                identity_for_pool(pool), owner=pool, max_size=max_size, idle_max=idle_max
            )
            setattr(pool, POOL_LEDGER, ledger)
            items = _idle_items(pool)
            if items is not None:
                setattr(pool, POOL_LINK, new_link(ledger.lane, key=ledger, items=items))
            STATE.pools.add(pool)
        for record in _idle_records(pool):
            if live_link(record, ledger) is None:
                adopt_record(ledger, record)
        return ledger
    except Exception as exc:
        STATE.attach_failed(pool, POOL_LEDGER, exc)
        return None


def detach_all() -> None:
    """Switch off: forget every attached pool, drop our attributes, unregister the ledgers."""
    registry = STATE.target_registry()
    for pool in STATE.take_pools():
        try:
            ledger = getattr(pool, POOL_LEDGER, None)
            drop_attr(pool, POOL_LEDGER)
            drop_attr(pool, POOL_LINK)
            for record in _idle_records(pool):
                drop_attr(record, REC_LINK)
            if ledger:
                ledger.lane.retired = True  # links still naming it (lent-out records) are stale
                registry.unregister(ledger)
        except Exception as exc:
            STATE.absorb(exc, "detach")
    BY_DBAPI.clear()


# ---------------------------------------------------------------------------- the fairy property

_FAIRY_PROPERTY: Final = property(operator.attrgetter(f"_connection_record.{REC_LINK}"))


def install_fairy_property(fairy_cls: type) -> None:
    """Give ``_ConnectionFairy`` the read-only ``_poolmon_link`` property (no Python frame)."""
    if fairy_cls.__dict__.get(FAIRY_LINK) is None:
        setattr(fairy_cls, FAIRY_LINK, _FAIRY_PROPERTY)


def remove_fairy_property(fairy_cls: type) -> None:
    if fairy_cls.__dict__.get(FAIRY_LINK) is _FAIRY_PROPERTY:
        delattr(fairy_cls, FAIRY_LINK)
