"""The wrappers the aiohttp shim installs, and its per-connector bookkeeping.
docs/shims-aiohttp.md lists the hook points and why each is where it is.

State lives in attributes on aiohttp's own objects (set with ``setattr``, read with ``getattr``):

* a connector (``BaseConnector``: ``TCPConnector``, ``UnixConnector``) carries
  ``_poolmon_connector``: its :class:`ConnectorState`, one :class:`KeyState` (one ledger) per
  connection key, i.e. per ``(host, port, ssl)`` target;
* a connection's protocol (``ResponseHandler``, one per socket) carries ``_poolmon_link``: a link
  record (:func:`poolmon.core.compiled.new_link`) with the ledger's lane, the connection id and
  its :class:`KeyState` as ``key``.

Where events come from (aiohttp 3.9-3.14, ``connector.py``):

* ``TCPConnector._create_connection`` / ``UnixConnector._create_connection`` -> **create**
  (DNS, TCP and TLS: aiohttp does them in one call), or a failed create;
* ``BaseConnector._wait_for_available_connection`` -> **wait** (the connector's waiters: the
  ``limit`` or ``limit_per_host`` is reached). It is resolved by the borrow that follows, or by
  the exception the waiting raises: aiohttp's timeouts cancel the task (and raise
  ``TimeoutError`` outside), so a cancellation is ``timeout`` when the request's
  ``ClientTimeout`` fired (its total timer, read from the callers' frames on this rare path, or
  a wait as long as ``timeout.connect``), else ``cancelled``; the connector closed under the
  waiter is ``pool_closed``;
* ``Connection.__init__`` -> **borrow** (``BaseConnector.connect`` makes a ``Connection`` exactly
  when it lends a protocol, reused or new);
* ``BaseConnector._release`` -> **return**, recorded before the original puts the protocol back
  (``Connection.release()`` after the body was read, ``Connection.close()``, a response's
  ``release()``/``close()``, the ``Connection`` finaliser): a response holds its connection
  until it is released;
* ``ResponseHandler.close`` of a linked protocol -> **evict**, the reason from the caller (read
  only on this rare path): the connector's ``_cleanup`` or ``_get`` closing a protocol that is
  still connected is ``idle_timeout`` (older than ``keepalive_timeout``), one that is not is
  ``broken`` (the server closed it); ``_release`` with ``force_close=True`` is ``other`` (the
  connector's deliberate churn: every connection closed after one use), with ``should_close``
  ``broken``; the connector's ``_close`` is ``pool_closed``.

The connector's cleanup (``_cleanup``, ``_cleanup_closed``) is not wrapped: its timing and order
are aiohttp's; only the protocol's ``close`` it calls records an eviction.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import CodeType
from typing import Any, Final

from poolmon.core.compiled import new_link
from poolmon.core.identity import PoolIdentity, derive_name
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.shims._attrs import pop_attr, setdefault_attr
from poolmon.shims._runtime import ShimState
from poolmon.shims._version import installed_version

__all__ = [
    "CONNECTOR",
    "LINK",
    "STATE",
    "ConnectorState",
    "KeyState",
    "close_reasons",
    "make_close_connector",
    "make_connection_init",
    "make_create_connection",
    "make_init",
    "make_proto_close",
    "make_release",
    "make_wait",
]

#: The shim's one state: patches, the registry new pools join, the error absorber.
STATE: Final = ShimState("aiohttp")

CONNECTOR: Final = "_poolmon_connector"
LINK: Final = "_poolmon_link"

#: Reason markers of the caller table (resolved against the protocol and connector).
IDLE_OR_BROKEN: Final = "<idle-or-broken>"
RELEASE: Final = "<release>"

Method = Callable[..., Any]

#: The wait the current task began in ``_wait_for_available_connection``: (key state, t0).
_WAITING: ContextVar[tuple[KeyState, float] | None] = ContextVar(
    "poolmon_aiohttp_wait", default=None
)


class KeyState:
    """poolmon's view of one connection key of one connector: its ledger, methods bound once."""

    __slots__ = ("__weakref__", "borrow", "ledger", "release")

    def __init__(self, ledger: PoolLedger) -> None:
        self.ledger = ledger
        self.borrow = ledger.borrow
        self.release = ledger.release


class ConnectorState:
    """poolmon's view of one connector. Holds no reference to the connector itself."""

    __slots__ = ("__weakref__", "keys", "limit", "limit_per_host", "lock", "unix_path")

    def __init__(self, limit: int, limit_per_host: int, unix_path: str | None) -> None:
        self.limit = limit
        self.limit_per_host = limit_per_host
        self.unix_path = unix_path
        self.keys: dict[Any, KeyState] = {}
        self.lock = threading.Lock()

    def key(self, key: Any, owner: Any) -> KeyState:
        state = self.keys.get(key)
        if state is not None:
            return state
        with self.lock:
            state = self.keys.get(key)
            if state is None:
                # Both limits (0 means none in aiohttp): the pool's max is what it can reach
                # alone, the smaller of the two; the connector's total bounds the sum of its
                # pools and is the pool's shared_max (spec 1.1, section 5).
                set_limits = [x for x in (self.limit_per_host, self.limit) if x]
                ledger = STATE.target_registry().register(
                    identity_for_key(key, self.unix_path, shared_max=self.limit or None),
                    owner=owner,
                    max_size=min(set_limits) if set_limits else None,
                )
                state = self.keys[key] = KeyState(ledger)
        return state


def identity_for_key(
    key: Any, unix_path: str | None, *, shared_max: int | None = None
) -> PoolIdentity:
    """``scheme://host:port`` from the key's host, port and TLS flag; the key's proxy, proxy
    credentials and headers hash are never read. ``shared_max``: the connector's ``limit``."""
    # Read defensively: connectors are also driven with keys of other shapes (aiohttp's own
    # tests pass plain strings); such a pool is named from what it has.
    is_ssl = bool(getattr(key, "is_ssl", False))
    scheme = "https" if is_ssl else "http"
    host = str(getattr(key, "host", None) or "localhost")
    port = getattr(key, "port", None)
    if not isinstance(port, int):
        port = 443 if is_ssl else 80
    return PoolIdentity(
        name=derive_name(scheme, host, port),
        system="http",
        server_address=scrub(host) if unix_path is None else "localhost",
        server_port=port,
        library="aiohttp",
        library_version=installed_version("aiohttp"),
        shared_max=shared_max,
    )


def connector_state(connector: Any) -> ConnectorState:
    state: ConnectorState | None = getattr(connector, CONNECTOR, None)
    if state is not None:
        return state
    # Public properties: ``limit``, ``limit_per_host``, and ``path`` (UnixConnector only).
    made = ConnectorState(
        int(getattr(connector, "limit", 0) or 0),
        int(getattr(connector, "limit_per_host", 0) or 0),
        getattr(connector, "path", None),
    )
    winner: ConnectorState = setdefault_attr(connector, CONNECTOR, made)
    if winner is made:
        STATE.pools.add(connector)
    return winner


def close_reasons(connector_mod: Any) -> dict[CodeType, str]:
    """The code of each connector function that closes protocols, mapped to its reason.
    Read from the unpatched functions; a name a future aiohttp lacks is simply absent."""
    base = connector_mod.BaseConnector
    out: dict[CodeType, str] = {}
    for name, reason in (
        ("_cleanup", IDLE_OR_BROKEN),
        ("_get", IDLE_OR_BROKEN),
        ("_release", RELEASE),
        ("_close", "pool_closed"),
    ):
        func = vars(base).get(name)
        code = getattr(func, "__code__", None)
        if code is not None:
            out[code] = reason
    return out


# ---------------------------------------------------------------------------- hooks


def make_init(original: Method) -> Method:
    """``BaseConnector.__init__``: attach the connector (its keys register when first used)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            connector_state(self)
        except Exception as exc:
            STATE.absorb(exc, "attach")

    return __init__


def make_create_connection(original: Method) -> Method:
    """``TCPConnector._create_connection`` / ``UnixConnector._create_connection``: a create."""

    async def _create_connection(self: Any, req: Any, traces: Any, timeout: Any) -> Any:
        state: KeyState | None = None
        t0 = 0.0
        try:
            state = connector_state(self).key(req.connection_key, self)
            t0 = state.ledger.now()
        except Exception as exc:
            STATE.absorb(exc, "connect")
        try:
            proto = await original(self, req, traces, timeout)
        except BaseException as exc:
            if state is not None:
                try:
                    state.ledger.create_failed(t0, exc)
                    waited = _WAITING.get()
                    if waited is not None:
                        # It queued, got a slot, and its connection could not be opened.
                        _WAITING.set(None)
                        waited[0].ledger.error("other", "wait", exc)
                except Exception as inner:
                    STATE.absorb(inner, "connect")
            raise
        if state is not None:
            try:
                conn_id = state.ledger.create(t0)
                state.ledger.protocol_version = "1.1"
                setattr(proto, LINK, new_link(state.ledger.lane, conn_id, key=state))
            except Exception as exc:
                STATE.absorb(exc, "connect")
        return proto

    return _create_connection


def make_wait(original: Method) -> Method:
    """``BaseConnector._wait_for_available_connection``: the caller queues. The wait ends at the
    borrow (``Connection.__init__``) or here, when the waiting raises: a ``ClientTimeout``
    (``timeout``: aiohttp cancels the task, then raises ``TimeoutError`` outside), a cancelled
    task (``cancelled``), the connector closed (``pool_closed``)."""

    async def _wait_for_available_connection(self: Any, key: Any, traces: Any) -> None:
        waited = None
        try:
            state = connector_state(self).key(key, self)
            waited = (state, state.ledger.now())
            state.ledger.wait()
            _WAITING.set(waited)
        except Exception as exc:
            STATE.absorb(exc, "wait")
        try:
            await original(self, key, traces)
        except BaseException as exc:
            if waited is not None and _WAITING.get() is waited:
                _WAITING.set(None)
                try:
                    _wait_failed(self, waited, exc)
                except Exception as inner:
                    STATE.absorb(inner, "wait")
            raise

    return _wait_for_available_connection


def _adopt(connector: Any, key: Any, protocol: Any) -> Any:
    """A protocol opened before instrumentation: adopt it (no create event). None for a
    ``Connection`` made by something other than a connector (aiohttp's tests use mocks)."""
    from aiohttp.connector import BaseConnector

    if not issubclass(type(connector), BaseConnector):  # a spec'd Mock passes isinstance
        return None
    state = connector_state(connector).key(key, connector)
    conn_link = new_link(state.ledger.lane, state.ledger.adopt(), key=state)
    setattr(protocol, LINK, conn_link)
    return conn_link


def make_connection_init(original: Method) -> Method:
    """``Connection.__init__``: the borrow. ``BaseConnector.connect`` makes a ``Connection``
    exactly when it lends a protocol (reused or new), right before returning it; a plain
    ``def`` here costs less per request than wrapping the ``connect`` coroutine."""

    def __init__(self: Any, connector: Any, key: Any, protocol: Any, loop: Any) -> None:
        original(self, connector, key, protocol, loop)
        try:
            waited = _WAITING.get()
            conn_link = getattr(protocol, LINK, None)
            if conn_link is None:
                conn_link = _adopt(connector, key, protocol)
                if conn_link is None:
                    return
            if waited is None:
                conn_link.key.borrow(conn_link.cid)  # the ledger's lane while open
            else:
                _WAITING.set(None)
                conn_link.key.borrow(conn_link.cid, waited[1], queued=True)
        except Exception as exc:
            STATE.absorb(exc, "borrow")

    return __init__


def _deadline_passed(frame: Any, waited: float) -> bool:
    """Whether a ``ClientTimeout`` ended this wait (read from the callers' frames, only when a
    wait failed): the request's total timer fired, or the wait outlasted ``timeout.connect``."""
    for _ in range(4):
        frame = frame.f_back if frame is not None else None
        if frame is None:
            return False
        local = frame.f_locals
        timer = local.get("timer")
        if getattr(timer, "_cancelled", False):
            return True  # the total timeout's TimerContext cancelled the task
        timeout = local.get("timeout")
        connect = getattr(timeout, "connect", None)
        if isinstance(connect, (int, float)) and connect > 0 and waited >= connect - 0.001:
            return True
    return False


def _wait_failed(connector: Any, waited: tuple[KeyState, float], exc: BaseException) -> None:
    state, t0 = waited
    ledger = state.ledger
    duration = max(0.0, ledger.now() - t0)
    if getattr(connector, "_closed", False):
        ledger.error("pool_closed", "wait", exc, duration=duration)
    elif isinstance(exc, asyncio.TimeoutError) or (
        isinstance(exc, asyncio.CancelledError) and _deadline_passed(sys._getframe(2), duration)
    ):
        ledger.timeout(t0, exc)
    elif isinstance(exc, asyncio.CancelledError):
        ledger.error("cancelled", "wait", exc, duration=duration)
    else:
        ledger.error("other", "wait", exc, duration=duration)


def make_release(original: Method) -> Method:
    """``BaseConnector._release``: the return, before the protocol goes back to the pool."""

    def _release(self: Any, key: Any, protocol: Any, *, should_close: bool = False) -> None:
        try:
            conn_link = protocol._poolmon_link  # LINK
            conn_link.key.release(conn_link.cid)
        except AttributeError:
            pass  # a protocol poolmon never saw
        except Exception as exc:
            STATE.absorb(exc, "return")
        original(self, key, protocol, should_close=should_close)

    return _release


def _reason(proto: Any, reasons: Mapping[CodeType, str]) -> str:
    frame = sys._getframe(2)
    reason = reasons.get(frame.f_code, "other")
    if reason == IDLE_OR_BROKEN:
        return "idle_timeout" if proto.is_connected() else "broken"
    if reason == RELEASE:
        connector = frame.f_locals.get("self")
        return "other" if getattr(connector, "_force_close", False) else "broken"
    return reason


def make_proto_close(original: Method, reasons: Mapping[CodeType, str]) -> Method:
    """``ResponseHandler.close``: evict the connection, once."""

    def close(self: Any) -> None:
        conn_link = pop_attr(self, LINK)
        if conn_link is None:
            original(self)
            return
        reason = "other"
        try:
            reason = _reason(self, reasons)
        except Exception as exc:
            STATE.absorb(exc, "close")
        try:
            original(self)
        finally:
            try:
                conn_link.key.ledger.evict(conn_link.cid, reason)
            except Exception as exc:
                STATE.absorb(exc, "close")

    return close


def make_close_connector(original: Method) -> Method:
    """``BaseConnector._close``: every protocol is closed (``pool_closed``), waiters cancelled;
    then each key's ledger retires what is left (``abort_ssl`` aborts instead of closing)."""

    def _close(self: Any, *, abort_ssl: bool = False) -> Any:
        result = original(self, abort_ssl=abort_ssl)
        try:
            state: ConnectorState | None = getattr(self, CONNECTOR, None)
            if state is not None:
                for key_state in list(state.keys.values()):
                    key_state.ledger.retire("pool_closed")
        except Exception as exc:
            STATE.absorb(exc, "close_connector")
        return result

    return _close
