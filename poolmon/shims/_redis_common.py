"""State shared by the sync and asyncio redis-py wrappers: attaching pools, stamping connections.

Bookkeeping lives in plain attributes on redis-py's own objects, because an attribute read is the
cheapest lookup Python has (the hot path budget is ~0.2 us per event):

* a pool carries ``_poolmon_ledger``: its :class:`~poolmon.core.ledger.PoolLedger` (``False`` when
  attaching failed, so a broken pool is not retried on every call);
* a connection carries ``_poolmon_ledger`` (set once, when its pool makes it), ``_poolmon_id``:
  the ledger id of its *current socket*, or ``None`` while it has none, and ``_poolmon_sock``:
  the socket's :class:`~poolmon.core.lane.Link` (lane, cid, key = the ledger) while it has a
  socket, ``None`` otherwise. The link is all the compiled borrow and return read: one attribute
  lookup per call (:func:`set_socket` keeps the two in step). A redis-py connection object
  outlives many sockets; every successful connect is a new physical connection and gets a new
  id, and every disconnect of a live socket evicts the id. ``id()`` is never used: CPython
  reuses it at once.

Pools are held weakly (a :class:`weakref.WeakSet` for uninstrument's clean-up, the registry's weak
owner reference for metrics), so instrumenting never keeps a pool alive.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from poolmon.core.compiled import new_link
from poolmon.core.identity import PoolIdentity, server_identity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import remember_secret
from poolmon.shims._attrs import drop_attr, pop_attr
from poolmon.shims._patch import is_wrapped
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "CLOSING",
    "CONN_ID",
    "CONN_LEDGER",
    "CONN_SOCK",
    "HC_T0",
    "POOL_LEDGER",
    "STATE",
    "Shadowed",
    "attach",
    "builtin_pool_metrics_enabled",
    "detach_all",
    "disconnect_reason",
    "identity_for_pool",
    "set_on_attach",
    "set_socket",
    "slow_conn_id",
    "stamp",
]

POOL_LEDGER: Final = "_poolmon_ledger"
CONN_LEDGER: Final = "_poolmon_ledger"
CONN_ID: Final = "_poolmon_id"
#: The Link (lane, cid, key = ledger) of a connection's current socket (the compiled hooks'
#: ``conn_link``).
CONN_SOCK: Final = "_poolmon_sock"
#: Set on a connection while a due PING health check runs: when it started.
HC_T0: Final = "_poolmon_hc_t0"

#: Set to an eviction reason while a pool-wide disconnect runs, so each connection's disconnect
#: knows why it is closed. A ContextVar, not a thread-local: asyncio's ``gather`` copies the
#: context into the tasks that close the connections, and concurrent tasks never see each other's.
CLOSING: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "poolmon_redis_closing", default=None
)


#: The redis shim's one state: patches, registry, attached pools, the error absorber.
STATE: Final = ShimState("redis")

#: Called with each newly attached pool's ledger (the shim records redis-py's own metrics there).
_on_attach: Callable[[PoolLedger], None] | None = None


def set_on_attach(hook: Callable[[PoolLedger], None] | None) -> None:
    """Set (None: clear) the hook :func:`attach` calls with each newly attached pool's ledger."""
    global _on_attach
    _on_attach = hook


# ---------------------------------------------------------------------------- identity


def identity_for_pool(pool: Any) -> PoolIdentity:
    """The pool's identity from its connection kwargs; credentials are remembered, never kept.

    Names are stable across restarts (``redis://host:port/db``, ``rediss://`` for TLS,
    ``redis+unix:///path/db``): no random part such as redis-py's own ``_pool_id``.
    """
    kwargs = dict(pool.connection_kwargs)
    for key in ("password", "ssl_password"):
        remember_secret(kwargs.get(key))
    # username, password and credential_provider never reach the identity: only host/port/db do.
    db = kwargs.get("db", 0)
    namespace = None if db is None else str(db)
    path = kwargs.get("path")
    conn_cls = getattr(pool, "connection_class", None)
    cls_name = getattr(conn_cls, "__name__", "")
    version = installed_version("redis")
    if path and "Unix" in cls_name:
        return server_identity(
            "redis",
            "localhost",
            None,
            namespace,
            library="redis",
            library_version=version,
            name=f"redis+unix://{path}" + (f"?db={namespace}" if namespace else ""),
        )
    host = str(kwargs.get("host") or "localhost")
    try:
        port: int | None = int(kwargs.get("port") or 6379)
    except (TypeError, ValueError):
        port = None
    scheme = "rediss" if "SSL" in cls_name else "redis"
    return server_identity(
        "redis", host, port, namespace, library="redis", library_version=version, scheme=scheme
    )


# ---------------------------------------------------------------------------- attaching


def _pool_connections(pool: Any) -> tuple[list[Any], list[Any]]:
    """(idle, in use) connections of a pool, read under the pool's own lock where it has one."""
    available = getattr(pool, "_available_connections", None)
    if available is not None:  # ConnectionPool (sync and asyncio) and async BlockingConnectionPool
        lock = getattr(pool, "_lock", None)
        if isinstance(lock, type(threading.RLock())):
            with lock:
                return list(available), list(pool._in_use_connections)
        # asyncio: we run on the loop thread between awaits, so nothing mutates the lists now.
        return list(available), list(pool._in_use_connections)
    queue = getattr(pool, "pool", None)  # sync BlockingConnectionPool: a Queue of conns and Nones
    if queue is not None:
        with queue.mutex:
            idle = [c for c in queue.queue if c is not None]
            every = list(getattr(pool, "_connections", ()))
        idle_ids = {id(c) for c in idle}
        return idle, [c for c in every if id(c) not in idle_ids]
    return [], []


def _is_connected(conn: Any) -> bool:
    try:
        return bool(conn.is_connected)
    except Exception:
        return False


def stamp(conn: Any, ledger: PoolLedger) -> None:
    """Mark ``conn`` as belonging to ``ledger`` (it has no tracked socket yet)."""
    target = _inner(conn)
    if getattr(target, CONN_LEDGER, None) is not ledger:
        setattr(target, CONN_LEDGER, ledger)
        set_socket(target, ledger, None)


def set_socket(conn: Any, ledger: PoolLedger, cid: int | None) -> None:
    """Record ``conn``'s current socket as ledger id ``cid`` (``None``: it has no socket)."""
    setattr(conn, CONN_ID, cid)
    setattr(conn, CONN_SOCK, None if cid is None else new_link(ledger.lane, cid, key=ledger))


def _inner(conn: Any) -> Any:
    # redis-py's client-side cache wraps a real connection in CacheProxyConnection; sockets (and so
    # our connect/disconnect hooks) belong to the inner one.
    inner = getattr(conn, "_conn", None)
    return inner if inner is not None and hasattr(inner, "connect_check_health") else conn


def attach(pool: Any) -> PoolLedger | None:
    """The pool's ledger, registering the pool on first sight. ``None`` if that failed.

    Pools created before instrument() are attached here too: their idle, connected connections are
    adopted (no create event: poolmon did not see them open); connections lent out at this moment
    are adopted when they are next borrowed.
    """
    try:
        with STATE.lock:
            ledger = getattr(pool, POOL_LEDGER, None)
            if ledger is not None:
                return ledger or None
            ledger = STATE.target_registry().register(
                identity_for_pool(pool),
                owner=pool,
                max_size=getattr(pool, "max_connections", None),
            )
            setattr(pool, POOL_LEDGER, ledger)
            STATE.pools.add(pool)
            if _on_attach is not None:
                _on_attach(ledger)
        idle, used = _pool_connections(pool)
        for conn in (*idle, *used):
            stamp(conn, ledger)
        for conn in idle:
            target = _inner(conn)
            if _is_connected(target):
                set_socket(target, ledger, ledger.adopt())
        return ledger
    except Exception as exc:
        STATE.attach_failed(pool, POOL_LEDGER, exc)
        return None


def slow_conn_id(ledger: PoolLedger, conn: Any) -> int | None:
    """The id of a borrowed connection the fast path could not read (pre-existing, proxied)."""
    target = _inner(conn)
    if getattr(target, CONN_LEDGER, None) is None:
        stamp(target, ledger)
    cid = getattr(target, CONN_ID, None)
    if cid is None and _is_connected(target):
        cid = ledger.adopt()
        set_socket(target, ledger, cid)
    return cid


def detach_all() -> None:
    """Switch the shim off: forget every attached pool, drop our attributes and unregister the
    ledgers (from the registry they joined: read before ``take_pools`` forgets it)."""
    registry = STATE.target_registry()
    for pool in STATE.take_pools():
        try:
            ledger = pop_attr(pool, POOL_LEDGER)
            idle, used = _pool_connections(pool)
            for conn in (*idle, *used):
                target = _inner(conn)
                drop_attr(target, CONN_LEDGER)
                drop_attr(target, CONN_ID)
                drop_attr(target, CONN_SOCK)
            if ledger:
                registry.unregister(ledger)
        except Exception as exc:
            STATE.absorb(exc, "detach")


# ---------------------------------------------------------------------------- eviction reasons


def disconnect_reason(args: tuple[Any, ...], error: object, health_check_failed: object) -> str:
    """Why a live socket is being closed.

    * ``pool_closed`` inside ``pool.disconnect()``/``close()`` (the :data:`CLOSING` context);
    * ``failed_validation`` when a PING health check failed (``health_check_failed=True``);
    * ``broken`` when redis-py passes the error, or disconnects while handling an exception (its
      socket-error paths call ``disconnect()`` inside ``except``: a killed connection found at
      borrow, a write or read that failed);
    * ``other`` for everything else (``should_reconnect``, an explicit ``conn.disconnect()``).
    """
    closing = CLOSING.get()
    if closing is not None:
        return closing
    if health_check_failed:
        return "failed_validation"
    if error is not None or (args and isinstance(args[0], BaseException)):
        return "broken"
    if sys.exc_info()[1] is not None:
        return "broken"
    return "other"


# ---------------------------------------------------------------------------- re-entry guard


class Shadowed:
    """Whether a wrapper on ``owner.name`` is reached through ``super()`` from an outer wrapper.

    redis-py subclasses override pool methods and sometimes delegate to ``super()`` (the asyncio
    ``BlockingConnectionPool.release``). Each overriding class is patched; the outermost poolmon
    wrapper in the instance's MRO records the event and the inner ones pass straight through, so
    nothing is counted twice. The answer depends only on the instance's class: computed once per
    class and cached (a dict hit on the hot path; the exact class skips even that).
    """

    __slots__ = ("_cache", "_name", "_owner")

    def __init__(self, owner: type, name: str) -> None:
        self._owner = owner
        self._name = name
        self._cache: dict[type, bool] = {}

    def __call__(self, cls: type) -> bool:
        try:
            return self._cache[cls]
        except KeyError:
            pass
        shadowed = False
        for klass in cls.__mro__:
            if klass is self._owner:
                break
            attr = klass.__dict__.get(self._name)
            if attr is not None and is_wrapped(attr):
                shadowed = True
                break
        self._cache[cls] = shadowed
        return shadowed


# ---------------------------------------------------------------------------- built-in metrics


def builtin_pool_metrics_enabled() -> bool:
    """Whether redis-py's own OpenTelemetry pool metrics (redis >= 7.2) are switched on.

    They are on when ``redis.observability`` was initialised with metrics enabled and the
    ``CONNECTION_BASIC`` metric group (the default groups include it). Then redis-py itself
    publishes ``db.client.connection.count/create_time/wait_time/timeouts`` for every pool.
    """
    try:
        from redis.observability.config import MetricGroup, TelemetryOption
        from redis.observability.providers import get_observability_instance

        manager = get_observability_instance().get_provider_manager()
        if manager is None:
            return False
        config = manager.config
        return bool(config.enabled_telemetry & TelemetryOption.METRICS) and bool(
            config.metric_groups & MetricGroup.CONNECTION_BASIC
        )
    except Exception:
        return False
