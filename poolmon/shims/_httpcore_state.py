"""Per-pool and per-connection bookkeeping of the httpcore shim (so httpx).

One httpcore ``ConnectionPool`` serves every origin its client talks to; poolmon names pools by
origin (``https://host:port``, as for urllib3), so one httpcore pool maps to one ledger per origin:

* the pool (``ConnectionPool`` / ``AsyncConnectionPool``) carries ``_poolmon_pool``: its
  :class:`PoolState` (the origins' :class:`OriginState` and the requests seen queued);
* a connection the pool made (``HTTPConnection`` / ``AsyncHTTPConnection``) carries
  ``_poolmon_origin``: the :class:`OriginState` it belongs to (set by ``create_connection``);
* the network stream of a connection poolmon saw open carries ``_poolmon_link``: a link record
  (:func:`poolmon.core.compiled.new_link`) with ``lane``, ``cid`` (the ledger id of that socket)
  and ``key`` (its :class:`OriginState`), and, when the pool picked it for closing,
  ``_poolmon_reason``. The HTTP/1.1 and HTTP/2 connection objects find it as
  ``self._network_stream._poolmon_link``: the stream is the one object that lives exactly as
  long as the physical connection;
* an HTTP/2 connection carries ``_poolmon_streams``: stream id -> the stream's start (what
  :meth:`PoolLedger.release_stream` needs for its use time);
* a ``PoolRequest`` left unassigned at the pool's limit carries ``_poolmon_origin`` (H1 below),
  and its ``Request``, once waiting, ``_poolmon_wait``: when it began waiting.

``id()`` is never used; pools are held weakly (the registry's owner reference), and every
attribute is set with ``setattr`` and read with ``getattr`` (poolmon/shims/_attrs.py).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Final

from poolmon.core.compiled import new_link
from poolmon.core.identity import PoolIdentity, derive_name
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.shims._attrs import setdefault_attr
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "LINK",
    "ORIGIN",
    "POOL",
    "REASON",
    "STATE",
    "STREAMS",
    "WAIT",
    "OriginState",
    "PoolState",
    "link",
    "pool_state",
    "proxied",
]

#: The shim's one state: patches, the registry new pools join, the error absorber.
STATE: Final = ShimState("httpcore")

POOL: Final = "_poolmon_pool"
ORIGIN: Final = "_poolmon_origin"
LINK: Final = "_poolmon_link"
REASON: Final = "_poolmon_reason"
STREAMS: Final = "_poolmon_streams"
WAIT: Final = "_poolmon_wait"

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class OriginState:
    """poolmon's view of one origin of one httpcore pool: its ledger, bound methods once."""

    __slots__ = ("__weakref__", "borrow", "ledger", "release")

    def __init__(self, ledger: PoolLedger) -> None:
        self.ledger = ledger
        self.borrow = ledger.borrow
        self.release = ledger.release


class PoolState:
    """poolmon's view of one httpcore pool. Holds no reference to the pool itself.

    H1: a request can only wait when, after ``_assign_requests_to_connections`` returned, it has
    no connection; that function runs under the pool's lock, so the requests it leaves
    unassigned are tagged there with their origin's state, and ``wait_for_connection`` (which
    follows it in the same loop iteration) records the wait when it finds no connection.
    """

    __slots__ = ("__weakref__", "idle_max", "lock", "max_size", "origins")

    def __init__(self, max_size: int | None, idle_max: int | None) -> None:
        self.max_size = max_size
        self.idle_max = idle_max
        self.origins: dict[tuple[bytes, bytes, int], OriginState] = {}
        self.lock = threading.Lock()

    def origin(self, origin: Any, owner: Any) -> OriginState:
        """The state of ``origin`` (an ``httpcore.Origin``, unhashable: keyed by its parts),
        registered at first sight and held by the registry as long as ``owner`` (the httpcore
        pool) lives."""
        key = (origin.scheme, origin.host, origin.port)
        state = self.origins.get(key)
        if state is not None:
            return state
        with self.lock:
            state = self.origins.get(key)
            if state is None:
                ledger = STATE.target_registry().register(
                    identity_for_origin(origin),
                    owner=owner,
                    max_size=self.max_size,
                    idle_max=self.idle_max,
                )
                state = self.origins[key] = OriginState(ledger)
        return state


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def identity_for_origin(origin: Any) -> PoolIdentity:
    """``scheme://host:port`` of an ``httpcore.Origin``: scheme, host and port only (httpcore's
    origin never holds userinfo; proxies and headers are never read)."""
    scheme = _text(origin.scheme) or "http"
    host = _text(origin.host) or "localhost"
    port = origin.port if origin.port is not None else _DEFAULT_PORTS.get(scheme)
    return PoolIdentity(
        name=derive_name(scheme, host, port),
        system="http",
        server_address=scrub(host),
        server_port=port,
        library="httpcore",
        library_version=installed_version("httpcore"),
    )


def _limit(value: Any) -> int | None:
    return None if value is None or value >= sys.maxsize else int(value)


def proxied(pool: Any) -> bool:
    """A proxy pool (``HTTPProxy``, ``SOCKSProxy`` and their async twins, what httpx makes for
    ``proxy=...``): its ``create_connection`` makes connection classes that open their sockets
    through their own code, which the shim does not see. Such a pool is left alone entirely, so
    it shows nothing rather than waits that no recorded borrow would resolve."""
    import httpcore

    kinds = tuple(
        k
        for k in (
            getattr(httpcore, name, None)
            for name in ("HTTPProxy", "AsyncHTTPProxy", "SOCKSProxy", "AsyncSOCKSProxy")
        )
        if isinstance(k, type)
    )
    return isinstance(pool, kinds)


def pool_state(pool: Any) -> PoolState:
    """The pool's state, made once (two threads meeting a new pool agree on the first)."""
    state: PoolState | None = getattr(pool, POOL, None)
    if state is not None:
        return state
    made = PoolState(
        _limit(getattr(pool, "_max_connections", None)),
        _limit(getattr(pool, "_max_keepalive_connections", None)),
    )
    winner: PoolState = setdefault_attr(pool, POOL, made)
    if winner is made:
        STATE.pools.add(pool)
    return winner


def link(state: OriginState, stream: Any, conn_id: int) -> None:
    """Mark ``stream`` (a network stream) as the ledger's connection ``conn_id``."""
    setattr(stream, LINK, new_link(state.ledger.lane, conn_id, key=state))
