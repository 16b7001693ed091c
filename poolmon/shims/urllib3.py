"""The urllib3 shim (and therefore requests): every ``HTTPConnectionPool`` and
``HTTPSConnectionPool`` speaks the standard, including the pools ``PoolManager``,
``ProxyManager`` and requests' ``HTTPAdapter`` create.

>>> import poolmon
>>> poolmon.instrument("urllib3")  # doctest: +SKIP

Pools are named ``scheme://host:port`` (the origin; for plain-HTTP requests through a forwarding
proxy, the proxy, since that is where the pooled sockets go). URL userinfo, proxy URLs and proxy
headers are never read into a name, label or event.

What the numbers mean for urllib3:

* a non-blocking pool (the default, and requests') opens extra connections when all are busy and
  discards them on return (eviction reason ``overflow``): it has no max, ``idle_max = maxsize``;
  a ``block=True`` pool has ``max = maxsize`` and its callers wait;
* with requests, a connection is returned only when the response body has been consumed:
  ``stream=True`` keeps it borrowed (visible as use time, and as a leak past the threshold);
* one borrow per attempt: retries and redirects each borrow and return (or evict) once;
* a ``PoolManager`` drops host pools without closing them; their connections are evicted
  (``pool_closed``) when the dropped pool is garbage collected.

See :mod:`poolmon.shims._urllib3_hooks` for the hook points and their caveats.
"""

from __future__ import annotations

import http.client
from types import CodeType
from typing import Any, Final

from poolmon.core.registry import PoolRegistry
from poolmon.shims import _urllib3_hooks as hooks
from poolmon.shims._urllib3_state import STATE
from poolmon.shims._version import installed_version, supported

__all__ = ["LIBRARY", "SUPPORTED", "available", "instrument", "is_instrumented", "uninstrument"]

LIBRARY: Final = "urllib3"
SUPPORTED: Final = ">=2.0,<3"


def available() -> bool:
    """urllib3 is installed (importable)."""
    return installed_version(LIBRARY) is not None


def is_instrumented() -> bool:
    return STATE.installed


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch urllib3's pools; True if now active. Twice is a no-op (the first registry stays).

    ``registry`` defaults to the default registry, looked up when each pool is first seen. An
    unsupported urllib3 version is reported once and left untouched.
    """
    # The default detach: urllib3's pools are not detached (see uninstrument).
    return STATE.install(registry, ready=_ready, patch=_apply)


def _ready() -> bool:
    return supported(LIBRARY, SUPPORTED)


def uninstrument() -> None:
    """Restore every original urllib3 attribute exactly (identity, not equality).

    Pools and connections keep their inert ``_poolmon_*`` attributes; nothing reads them any more
    (urllib3's pools are not detached: a pool seen again after a new ``instrument()`` goes on
    recording into the ledger it was registered with).
    """
    STATE.uninstall()  # restore, then switch off; no pool is tracked there (see above)


def _apply() -> None:
    import urllib3.connection as connection
    import urllib3.connectionpool as connectionpool
    import urllib3.response as response

    pool_cls = connectionpool.HTTPConnectionPool
    reasons = _close_reasons(connectionpool, response)

    patches = STATE.patches
    patches.wrap(pool_cls, "__init__", hooks.make_init)
    patches.wrap(pool_cls, "_get_conn", hooks.make_get_conn)
    patches.wrap(pool_cls, "_put_conn", hooks.make_put_conn)
    patches.wrap(pool_cls, "close", hooks.make_close_pool)
    # Each class that overrides connect gets its own patch (HTTPSConnection does not call super).
    for conn_cls in (connection.HTTPConnection, connection.HTTPSConnection):
        if "connect" in vars(conn_cls):
            patches.wrap(conn_cls, "connect", hooks.make_connect)
    for conn_cls in (connection.HTTPConnection, connection.HTTPSConnection):
        if "close" in vars(conn_cls):
            patches.wrap(conn_cls, "close", lambda orig: hooks.make_close_conn(orig, reasons))


def _code(obj: Any) -> CodeType | None:
    """The code object of a function, unwrapping decorators (``contextmanager`` keeps
    ``__wrapped__``)."""
    obj = getattr(obj, "__wrapped__", obj)
    return getattr(obj, "__code__", None)


def _close_reasons(connectionpool: Any, response: Any) -> dict[CodeType, str]:
    """Map the code of each urllib3/http.client function that closes connections to a reason.

    Read from the unpatched functions; a name a future urllib3 lacks is simply absent (its
    closes are then reported as ``other``, never wrongly).
    """
    pool_cls = connectionpool.HTTPConnectionPool
    candidates: list[tuple[Any, str]] = [
        (vars(pool_cls).get("_get_conn"), "broken"),
        (vars(pool_cls).get("urlopen"), "broken"),
        (vars(pool_cls).get("_put_conn"), hooks.PUT_CONN),
        (getattr(connectionpool, "_close_pool_connections", None), "pool_closed"),
        (http.client.HTTPConnection.getresponse, "broken"),
        (getattr(response.HTTPResponse, "_error_catcher", None), "broken"),
    ]
    out: dict[CodeType, str] = {}
    for func, reason in candidates:
        code = _code(func) if func is not None else None
        if code is not None:
            out[code] = reason
    return out
