"""Per-pool and per-connection bookkeeping of the urllib3 shim.

State lives in plain attributes on urllib3's own objects, because an attribute read is the cheapest
lookup Python has (the hot path budget is ~0.2 us per event):

* a pool (``HTTPConnectionPool``) carries ``_poolmon_state``: its :class:`PoolState`;
* a connection object carries ``_poolmon_link`` while it has a *socket poolmon saw open*: a link
  record (:func:`poolmon.core.compiled.new_link`) with ``lane`` (the ledger's hot lane when the
  socket was opened), ``cid`` (the socket's ledger id) and ``key`` (the pool's
  :class:`PoolState`). The compiled hooks read the record in one attribute lookup; the Python
  paths record through ``link.key.borrow(link.cid)`` / ``link.key.release(link.cid)``, the
  ledger's own methods (the lane protocol, :mod:`poolmon.core.lane`). A urllib3 connection object
  outlives many sockets: every ``connect()`` is a new physical connection with a new ledger id
  (a new link replaces the old), every ``close()`` of a linked socket evicts it and drops the
  link.
* a connection object borrowed *without* a socket carries ``_poolmon_pending`` = ``(state, waited,
  queued)``: its borrow is recorded at the ``connect()`` that follows, after the create (the
  standard's state machine: create, then borrow). ``_put_conn`` clears it.

``id()`` is never used: CPython reuses it at once. Pools are held weakly (the registry's weak owner
reference); when urllib3 drops a pool without closing it (a ``PoolManager`` evicting a host pool
from its ``RecentlyUsedContainer``, ``PoolManager.clear()``) the pool's connections are recorded as
evicted (``pool_closed``) when the pool is collected.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from base64 import b64decode
from collections.abc import Callable, Mapping
from typing import Any, Final

from poolmon.core.compiled import new_link
from poolmon.core.identity import PoolIdentity, server_identity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import remember_secret, scrub
from poolmon.shims._attrs import setdefault_attr
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "LINK",
    "PENDING",
    "POOL_STATE",
    "STATE",
    "PoolState",
    "attach",
    "link",
]

#: The shim's one state: patches, the registry new pools join, the error absorber.
STATE: Final = ShimState("urllib3")

#: Attribute names on urllib3's objects (module docstring).
POOL_STATE: Final = "_poolmon_state"
LINK: Final = "_poolmon_link"
PENDING: Final = "_poolmon_pending"

_DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443}


class PoolState:
    """poolmon's view of one urllib3 pool. Holds no reference to the pool itself.

    ``borrow``/``release`` are the ledger's methods, bound once (the Python paths' one call per
    event). ``closing`` is set by ``pool.close()``; the ledger's close event is emitted once the
    last connection poolmon knows is evicted (connections borrowed at close time are closed by
    urllib3 when they are returned), so the stream never shows a connection event after the
    pool's close.
    """

    __slots__ = ("__weakref__", "borrow", "closing", "ledger", "lock", "release")

    def __init__(self, ledger: PoolLedger) -> None:
        self.ledger = ledger
        self.borrow: Callable[..., None] = ledger.borrow
        self.release: Callable[[int], None] = ledger.release
        self.closing = False
        self.lock = threading.Lock()

    def maybe_close(self) -> None:
        """Close the ledger when the pool is closing and nothing it knows is alive any more."""
        if not self.closing or self.ledger.closed:
            return
        with self.lock:
            snap = self.ledger.snapshot()
            if snap.idle + snap.used == 0:
                self.ledger.close()

    def drop_all(self) -> None:
        """The pool object is gone: whatever poolmon still counts as alive in it is gone too.

        Runs from a garbage-collection callback: ``retire`` never waits for the ledger's lock.
        """
        self.ledger.retire("pool_closed")


def identity_for_pool(pool: Any) -> PoolIdentity:
    """``scheme://host:port`` of the pool's origin (for a forwarding proxy pool: the proxy's).

    Built from the pool's parsed host and port only: urllib3 never keeps userinfo there, and proxy
    URLs and headers are never read.
    """
    scheme = str(getattr(pool, "scheme", None) or "http")
    host = str(pool.host or "localhost")
    port = pool.port if pool.port is not None else _DEFAULT_PORTS.get(scheme)
    return server_identity(
        "http",
        scrub(host),
        port,
        library="urllib3",
        library_version=installed_version("urllib3"),
        scheme=scheme,
    )


def _remember_pool_secrets(pool: Any) -> None:
    """Teach :func:`scrub` the credentials this pool carries, should an error message echo one."""
    proxy = getattr(pool, "proxy", None)
    auth = getattr(proxy, "auth", None) if proxy is not None else None
    if auth:
        remember_secret(str(auth).partition(":")[2] or auth)
    for headers in (getattr(pool, "proxy_headers", None), getattr(pool, "headers", None)):
        if not headers:
            continue
        for key, value in dict(headers).items():
            if str(key).lower() not in ("authorization", "proxy-authorization"):
                continue
            token = str(value).split()[-1] if str(value).split() else ""
            remember_secret(token)
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                remember_secret(b64decode(token, validate=True).decode().partition(":")[2])


def attach(pool: Any) -> PoolState:
    """Register ``pool`` in the registry (once) and return its state.

    Limits: a non-blocking pool opens more than ``maxsize`` connections when asked (the extra ones
    are discarded on return), so it has no max and ``idle_max = maxsize``; a ``block=True`` pool
    never exceeds ``maxsize``.
    """
    state: PoolState | None = getattr(pool, POOL_STATE, None)
    if state is not None:
        return state
    _remember_pool_secrets(pool)
    queue = pool.pool
    maxsize = getattr(queue, "maxsize", None) if queue is not None else None
    block = bool(getattr(pool, "block", False))
    registry = STATE.target_registry()
    ledger = registry.register(
        identity_for_pool(pool),
        owner=pool,
        max_size=maxsize if block else None,
        idle_max=maxsize,
    )
    state = PoolState(ledger)
    # Two threads attaching one pool at once agree on the first state.
    winner: PoolState = setdefault_attr(pool, POOL_STATE, state)
    if winner is not state:
        registry.unregister(ledger)
        return winner
    # The state holds no reference to the pool, so this keeps nothing alive.
    weakref.finalize(pool, _pool_collected, state)
    return state


def _pool_collected(state: PoolState) -> None:
    try:
        state.drop_all()
    except Exception as exc:
        STATE.absorb(exc, "pool_collected")


def link(state: PoolState, conn: Any, conn_id: int) -> None:
    """Mark ``conn``'s current socket as the ledger's connection ``conn_id``."""
    setattr(conn, LINK, new_link(state.ledger.lane, conn_id, key=state))
