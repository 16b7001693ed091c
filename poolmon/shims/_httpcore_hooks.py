"""The wrappers the httpcore shim installs (sync and async twins), each with the original's
exact signature. docs/shims-httpx.md lists the hook points and why each is where it is.

Where events come from (httpcore 1.0, ``_sync``/``_async`` ``connection_pool.py``,
``connection.py``, ``http11.py``, ``http2.py``):

* ``ConnectionPool.create_connection`` tags the new ``HTTPConnection`` with its origin's state;
* ``HTTPConnection._connect`` -> **create** (TCP, then TLS; its duration is both), multiplexed
  with a stream limit when HTTP/2 was negotiated (ALPN ``h2``, or ``http2=True, http1=False``),
  or a failed create;
* ``HTTP11Connection._send_request_headers`` -> **borrow**: the first thing httpcore does after
  its own locked ``NEW|IDLE -> ACTIVE`` check, so a request that loses the race for a connection
  (``ConnectionNotAvailable``, retried by the pool) is never recorded as a borrow;
* ``HTTP11Connection._response_closed`` -> **return**, recorded *before* the original makes the
  connection idle (after that another request may take it). It runs when the response is closed:
  a streamed response holds its connection until then. It also runs on every failed request;
* ``HTTP2Connection._send_request_headers`` / ``_response_closed`` -> a stream's **borrow** /
  **return** (:meth:`PoolLedger.borrow_stream`); the borrow comes after httpcore acquired its
  ``_max_streams`` semaphore, and carries ``_max_streams`` (1 until the server's SETTINGS,
  then its ``MAX_CONCURRENT_STREAMS``, capped at httpcore's 100);
* ``_assign_requests_to_connections`` -> **evict** of the connections it picks for closing, at
  once (H2 in the code): ``idle_timeout`` past ``keepalive_expiry``, ``broken`` when the server
  closed the idle socket, ``overflow`` over ``max_keepalive_connections`` or to make room for
  another origin;
* ``HTTP11Connection.close`` / ``HTTP2Connection.close`` (``aclose``) -> **evict** of every other
  connection: ``pool_closed`` from the pool's ``close``, else ``broken`` (a failed request,
  ``Connection: close``, GOAWAY: httpcore closes such connections itself);
* ``PoolRequest.wait_for_connection`` with no connection assigned -> **wait**, resolved by the
  queued borrow or an **error** in phase ``wait``: ``timeout`` (``httpcore.PoolTimeout``, which
  httpx raises as ``httpx.PoolTimeout``), ``cancelled`` (task cancellation), ``other``.

Every bookkeeping step sits in ``try/except Exception``: a failure goes to ``STATE.absorb``, never
into httpcore; httpcore's own exceptions pass through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from poolmon.shims._attrs import pop_attr
from poolmon.shims._httpcore_state import (
    LINK,
    ORIGIN,
    POOL,
    REASON,
    STATE,
    STREAMS,
    WAIT,
    OriginState,
    PoolState,
    link,
    pool_state,
    proxied,
)

__all__ = [
    "make_assign",
    "make_close",
    "make_close_pool",
    "make_connect",
    "make_create_connection",
    "make_h2_response_closed",
    "make_h2_send_headers",
    "make_init",
    "make_response_closed",
    "make_send_headers",
    "make_wait",
]

Method = Callable[..., Any]


def _cancelled_types() -> tuple[type[BaseException], ...]:
    import asyncio

    out: list[type[BaseException]] = [asyncio.CancelledError, KeyboardInterrupt]
    try:
        import trio

        out.append(trio.Cancelled)
    except ImportError:
        pass
    return tuple(out)


def _wait_failed(origin: OriginState, t0: float, exc: BaseException) -> None:
    import httpcore

    ledger = origin.ledger
    if isinstance(exc, httpcore.PoolTimeout):
        ledger.timeout(t0, exc)
    elif isinstance(exc, _cancelled_types()):
        ledger.error("cancelled", "wait", exc, duration=max(0.0, ledger.now() - t0))
    else:
        ledger.error("other", "wait", exc, duration=max(0.0, ledger.now() - t0))


# ---------------------------------------------------------------------------- the pool


def make_init(original: Method) -> Method:
    """``ConnectionPool.__init__``: attach the pool's state (its origins register when seen);
    a proxy pool is not attached (:func:`~poolmon.shims._httpcore_state.proxied`)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            if not proxied(self):
                pool_state(self)
        except Exception as exc:
            STATE.absorb(exc, "attach")

    return __init__


def make_create_connection(original: Method) -> Method:
    def create_connection(self: Any, origin: Any) -> Any:
        conn = original(self, origin)
        try:
            setattr(conn, ORIGIN, pool_state(self).origin(origin, self))
        except Exception as exc:
            STATE.absorb(exc, "create_connection")
        return conn

    return create_connection


def _closing_reason(inner: Any, stream: Any) -> str:
    expire_at = getattr(inner, "_expire_at", None)
    if expire_at is not None and time.monotonic() > expire_at:
        return "idle_timeout"
    if inner.is_idle() and stream.get_extra_info("is_readable"):
        return "broken"  # the server closed the idle keep-alive connection
    return "overflow"


def _evict_closing(closing: list[Any]) -> None:
    # H2: a connection the assignment picked for closing has left the pool's list already, and
    # the pool may open its replacement (another thread, another task) before the socket is
    # actually closed outside the lock: it is evicted here, when the pool stopped counting it,
    # so poolmon never counts more connections than the pool does. Its close then finds no link.
    for conn in closing:
        inner = getattr(conn, "_connection", None)
        stream = getattr(inner, "_network_stream", None)
        if stream is None:
            continue
        conn_link = pop_attr(stream, LINK)
        if conn_link is not None:
            conn_link.key.ledger.evict(conn_link.cid, _closing_reason(inner, stream))


def _tag_queued(pool: Any, state: PoolState) -> None:
    # H1 (PoolState): called under the pool's lock, right after the assignment.
    for request in pool._requests:
        if request.connection is None and getattr(request, ORIGIN, None) is None:
            setattr(request, ORIGIN, state.origin(request.request.url.origin, pool))


def make_assign(original: Method) -> Method:
    """``_assign_requests_to_connections`` (sync in both pools): the eviction of the connections
    it picked for closing, and the origin of each request it left waiting."""

    def _assign_requests_to_connections(self: Any) -> Any:
        closing = original(self)
        try:
            if closing:
                _evict_closing(closing)
            if len(self._connections) >= self._max_connections:
                state = getattr(self, POOL, None)
                if state is not None:
                    _tag_queued(self, state)
        except Exception as exc:
            STATE.absorb(exc, "assign")
        return closing

    return _assign_requests_to_connections


def _start_wait(pool_request: Any) -> tuple[OriginState, float] | None:
    origin: OriginState | None = getattr(pool_request, ORIGIN, None)
    if origin is None:
        return None
    request = pool_request.request
    mark = getattr(request, WAIT, None)
    if mark is not None:
        return origin, mark  # re-queued after ConnectionNotAvailable: one wait, still pending
    t0 = origin.ledger.now()
    origin.ledger.wait()
    setattr(request, WAIT, t0)
    return origin, t0


def _end_wait(pool_request: Any, started: tuple[OriginState, float], exc: BaseException) -> None:
    if pop_attr(pool_request.request, WAIT) is not None:
        _wait_failed(started[0], started[1], exc)


def make_wait(original: Method, *, is_async: bool) -> Method:
    """``PoolRequest.wait_for_connection``: a request with no connection yet waits."""
    if is_async:

        async def wait_async(self: Any, timeout: float | None = None) -> Any:
            if self.connection is not None:
                return await original(self, timeout)
            started = None
            try:
                started = _start_wait(self)
            except Exception as exc:
                STATE.absorb(exc, "wait")
            try:
                return await original(self, timeout)
            except BaseException as exc:
                if started is not None:
                    try:
                        _end_wait(self, started, exc)
                    except Exception as inner:
                        STATE.absorb(inner, "wait")
                raise

        return wait_async

    def wait_for_connection(self: Any, timeout: float | None = None) -> Any:
        if self.connection is not None:
            return original(self, timeout)
        started = None
        try:
            started = _start_wait(self)
        except Exception as exc:
            STATE.absorb(exc, "wait")
        try:
            return original(self, timeout)
        except BaseException as exc:
            if started is not None:
                try:
                    _end_wait(self, started, exc)
                except Exception as inner:
                    STATE.absorb(inner, "wait")
            raise

    return wait_for_connection


def _closing_pool(pool: Any) -> list[OriginState]:
    state: PoolState | None = getattr(pool, POOL, None)
    if state is None:
        return []
    for conn in list(pool._connections):
        stream = getattr(getattr(conn, "_connection", None), "_network_stream", None)
        if stream is not None and getattr(stream, LINK, None) is not None:
            setattr(stream, REASON, "pool_closed")
    return list(state.origins.values())


def _closed_pool(origins: list[OriginState]) -> None:
    for origin in origins:
        origin.ledger.close()


def make_close_pool(original: Method, *, is_async: bool) -> Method:
    """``ConnectionPool.close`` / ``AsyncConnectionPool.aclose``: every connection is closed
    (reason ``pool_closed``, borrowed ones too: httpcore closes them all), then the ledgers."""
    if is_async:

        async def aclose(self: Any) -> None:
            origins: list[OriginState] = []
            try:
                origins = _closing_pool(self)
            except Exception as exc:
                STATE.absorb(exc, "close_pool")
            await original(self)
            try:
                _closed_pool(origins)
            except Exception as exc:
                STATE.absorb(exc, "close_pool")

        return aclose

    def close(self: Any) -> None:
        origins: list[OriginState] = []
        try:
            origins = _closing_pool(self)
        except Exception as exc:
            STATE.absorb(exc, "close_pool")
        original(self)
        try:
            _closed_pool(origins)
        except Exception as exc:
            STATE.absorb(exc, "close_pool")

    return close


# ---------------------------------------------------------------------------- connections


def _connected(conn: Any, origin: OriginState, t0: float, stream: Any) -> None:
    ssl_object = stream.get_extra_info("ssl_object")
    h2 = (ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2") or (
        conn._http2 and not conn._http1
    )
    ledger = origin.ledger
    # httpcore serves one stream on a new HTTP/2 connection until the server's SETTINGS arrive.
    conn_id = ledger.create(t0, max_streams=1 if h2 else None)
    ledger.protocol_version = "2" if h2 else "1.1"
    link(origin, stream, conn_id)


def _connect_failed(origin: OriginState, t0: float, request: Any, exc: BaseException) -> None:
    origin.ledger.create_failed(t0, exc)
    if pop_attr(request, WAIT) is not None:
        # It queued, got a connection slot, and the connection could not be opened.
        origin.ledger.error("other", "wait", exc)


def make_connect(original: Method, *, is_async: bool) -> Method:
    """``HTTPConnection._connect``: a create (or a failed one)."""
    if is_async:

        async def _connect_async(self: Any, request: Any) -> Any:
            origin: OriginState | None = getattr(self, ORIGIN, None)
            if origin is None:
                return await original(self, request)
            t0 = origin.ledger.now()
            try:
                stream = await original(self, request)
            except BaseException as exc:
                try:
                    _connect_failed(origin, t0, request, exc)
                except Exception as inner:
                    STATE.absorb(inner, "connect")
                raise
            try:
                _connected(self, origin, t0, stream)
            except Exception as exc:
                STATE.absorb(exc, "connect")
            return stream

        return _connect_async

    def _connect(self: Any, request: Any) -> Any:
        origin: OriginState | None = getattr(self, ORIGIN, None)
        if origin is None:
            return original(self, request)
        t0 = origin.ledger.now()
        try:
            stream = original(self, request)
        except BaseException as exc:
            try:
                _connect_failed(origin, t0, request, exc)
            except Exception as inner:
                STATE.absorb(inner, "connect")
            raise
        try:
            _connected(self, origin, t0, stream)
        except Exception as exc:
            STATE.absorb(exc, "connect")
        return stream

    return _connect


def _record_first(
    original: Method, record: Callable[..., None], where: str, *, is_async: bool
) -> Method:
    """A wrapper that records with ``record(self, ...)`` (a failure absorbed, counted and
    logged once), then runs the original with the same arguments (httpcore passes some by
    keyword)."""
    if is_async:

        async def recording_async(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                record(self, *args, **kwargs)
            except Exception as exc:
                STATE.absorb(exc, where)
            await original(self, *args, **kwargs)

        return recording_async

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            record(self, *args, **kwargs)
        except Exception as exc:
            STATE.absorb(exc, where)
        original(self, *args, **kwargs)

    return recording


def _borrow(conn: Any, request: Any) -> None:
    conn_link = getattr(conn._network_stream, LINK, None)
    if conn_link is None:
        return  # a connection poolmon did not see open (made outside an instrumented pool)
    t0 = getattr(request, WAIT, None)
    if t0 is None:
        conn_link.key.borrow(conn_link.cid)  # the ledger's lane while open (lane.py)
    else:
        pop_attr(request, WAIT)
        conn_link.key.borrow(conn_link.cid, t0, queued=True)


def _release(conn: Any) -> None:
    conn_link = getattr(conn._network_stream, LINK, None)
    if conn_link is not None:
        conn_link.key.release(conn_link.cid)


def make_send_headers(original: Method, *, is_async: bool) -> Method:
    """``HTTP11Connection._send_request_headers``: the borrow (see the module docstring)."""
    return _record_first(original, _borrow, "borrow", is_async=is_async)


def make_response_closed(original: Method, *, is_async: bool) -> Method:
    """``HTTP11Connection._response_closed``: the return, before the connection goes idle."""
    return _record_first(original, _release, "return", is_async=is_async)


def _borrow_stream(conn: Any, request: Any, stream_id: int) -> None:
    conn_link = getattr(conn._network_stream, LINK, None)
    if conn_link is None:
        return
    t0 = pop_attr(request, WAIT)
    ledger = conn_link.key.ledger
    start = ledger.borrow_stream(
        conn_link.cid, t0, queued=t0 is not None, max_streams=getattr(conn, "_max_streams", None)
    )
    streams: dict[int, float] | None = getattr(conn, STREAMS, None)
    if streams is None:
        streams = {}
        setattr(conn, STREAMS, streams)
    streams[stream_id] = start


def _release_stream(conn: Any, stream_id: int) -> None:
    streams: dict[int, float] | None = getattr(conn, STREAMS, None)
    start = streams.pop(stream_id, None) if streams is not None else None
    conn_link = getattr(conn._network_stream, LINK, None)
    if start is not None and conn_link is not None:
        conn_link.key.ledger.release_stream(conn_link.cid, start)


def make_h2_send_headers(original: Method, *, is_async: bool) -> Method:
    """``HTTP2Connection._send_request_headers``: a stream's borrow."""
    return _record_first(original, _borrow_stream, "borrow", is_async=is_async)


def make_h2_response_closed(original: Method, *, is_async: bool) -> Method:
    """``HTTP2Connection._response_closed``: a stream's return, before the original releases
    the stream semaphore (after that another stream may start)."""
    return _record_first(original, _release_stream, "return", is_async=is_async)


def _evict(stream: Any, conn_link: Any) -> None:
    reason = pop_attr(stream, REASON) or "broken"
    conn_link.key.ledger.evict(conn_link.cid, reason)


def make_close(original: Method, *, is_async: bool) -> Method:
    """``HTTP11Connection.close`` / ``HTTP2Connection.close`` (``aclose``): the evict, once."""
    if is_async:

        async def aclose(self: Any) -> None:
            stream = self._network_stream
            conn_link = pop_attr(stream, LINK)
            if conn_link is None:
                await original(self)
                return
            try:
                await original(self)
            finally:
                try:
                    _evict(stream, conn_link)
                except Exception as exc:
                    STATE.absorb(exc, "close")

        return aclose

    def close(self: Any) -> None:
        stream = self._network_stream
        conn_link = pop_attr(stream, LINK)
        if conn_link is None:
            original(self)
            return
        try:
            original(self)
        finally:
            try:
                _evict(stream, conn_link)
            except Exception as exc:
                STATE.absorb(exc, "close")

    return close
