"""The httpcore shim, and therefore httpx: every ``httpcore.ConnectionPool`` and
``AsyncConnectionPool`` (what ``httpx.Client`` and ``httpx.AsyncClient`` send through) speaks the
standard, HTTP/1.1 and HTTP/2.

>>> import poolmon
>>> poolmon.instrument("httpx")  # doctest: +SKIP

Pools are named by origin, ``scheme://host:port`` (like urllib3's): one httpcore pool talking to
two hosts is two poolmon pools. Their ``max`` is the httpcore pool's ``max_connections`` and their
``idle_max`` its ``max_keepalive_connections``; both limits are shared by all origins of the
httpcore pool (httpcore counts them pool-wide).

What the numbers mean for httpx:

* one borrow per request attempt, from the moment httpcore starts sending it on a connection
  until the response is closed: ``client.stream(...)`` holds its connection until the block ends,
  ``client.get(...)`` until the body is read;
* an HTTP/2 connection is *multiplexed* (spec 1.1): each request is a stream, counted in
  ``pool.stream.usage``; its limit is 1 until the server's SETTINGS arrive, then the server's
  ``MAX_CONCURRENT_STREAMS`` (httpcore caps it at 100);
* requests queue only when ``max_connections`` is reached; ``httpx.PoolTimeout`` is an error of
  type ``timeout``, a cancelled waiting task one of type ``cancelled``;
* connections through a proxy (``proxy=...``, SOCKS) are not recorded in this version: proxy
  pools are left alone entirely (docs/shims-httpx.md, "What cannot be seen").

URL userinfo, ``Authorization``/``Proxy-Authorization`` headers and proxy URLs are never read:
identities are built from httpcore's ``Origin`` (scheme, host, port).

See :mod:`poolmon.shims._httpcore_hooks` and docs/shims-httpx.md for the hook points.
"""

from __future__ import annotations

from functools import partial
from typing import Final

from poolmon.core.registry import PoolRegistry
from poolmon.shims import _httpcore_hooks as hooks
from poolmon.shims._httpcore_state import STATE
from poolmon.shims._version import installed_version, supported

__all__ = ["LIBRARY", "SUPPORTED", "available", "instrument", "is_instrumented", "uninstrument"]

LIBRARY: Final = "httpcore"
SUPPORTED: Final = ">=1.0,<2"


def available() -> bool:
    """httpcore is installed (importable)."""
    return installed_version(LIBRARY) is not None


def is_instrumented() -> bool:
    return STATE.installed


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch httpcore's pools and connections; True if now active. Twice is a no-op.

    An unsupported httpcore version is reported once and left untouched.
    """
    return STATE.install(registry, ready=lambda: supported(LIBRARY, SUPPORTED), patch=_apply)


def uninstrument() -> None:
    """Restore every original httpcore attribute exactly (identity, not equality).

    Pools, connections and streams keep their inert ``_poolmon_*`` attributes; nothing reads them
    any more.
    """
    STATE.uninstall()


def _apply() -> None:
    from httpcore._async import connection as aconnection
    from httpcore._async import connection_pool as apool
    from httpcore._async import http2 as ahttp2
    from httpcore._async import http11 as ahttp11
    from httpcore._sync import connection as sconnection
    from httpcore._sync import connection_pool as spool
    from httpcore._sync import http2 as shttp2
    from httpcore._sync import http11 as shttp11

    wrap = STATE.patches.wrap
    for is_async, pool_cls, request_cls, conn_cls, h11_cls, h2_cls, close in (
        (
            False,
            spool.ConnectionPool,
            spool.PoolRequest,
            sconnection.HTTPConnection,
            shttp11.HTTP11Connection,
            shttp2.HTTP2Connection,
            "close",
        ),
        (
            True,
            apool.AsyncConnectionPool,
            apool.AsyncPoolRequest,
            aconnection.AsyncHTTPConnection,
            ahttp11.AsyncHTTP11Connection,
            ahttp2.AsyncHTTP2Connection,
            "aclose",
        ),
    ):
        wrap(pool_cls, "__init__", hooks.make_init)
        wrap(pool_cls, "create_connection", hooks.make_create_connection)
        wrap(pool_cls, "_assign_requests_to_connections", hooks.make_assign)
        wrap(pool_cls, close, partial(hooks.make_close_pool, is_async=is_async))
        wrap(request_cls, "wait_for_connection", partial(hooks.make_wait, is_async=is_async))
        wrap(conn_cls, "_connect", partial(hooks.make_connect, is_async=is_async))
        wrap(h11_cls, "_send_request_headers", partial(hooks.make_send_headers, is_async=is_async))
        wrap(h11_cls, "_response_closed", partial(hooks.make_response_closed, is_async=is_async))
        wrap(h11_cls, close, partial(hooks.make_close, is_async=is_async))
        wrap(
            h2_cls, "_send_request_headers", partial(hooks.make_h2_send_headers, is_async=is_async)
        )
        wrap(h2_cls, "_response_closed", partial(hooks.make_h2_response_closed, is_async=is_async))
        wrap(h2_cls, close, partial(hooks.make_close, is_async=is_async))
