"""The aiohttp shim: every ``TCPConnector`` and ``UnixConnector`` (what ``aiohttp.ClientSession``
and anything built on it, such as aiobotocore, send through) speaks the standard.

>>> import poolmon
>>> poolmon.instrument("aiohttp")  # doctest: +SKIP

A connector pools connections per *connection key* (host, port, TLS settings); poolmon names each
key's pool ``scheme://host:port``. Its ``max`` is the smaller of the connector's
``limit_per_host`` and ``limit`` (0, aiohttp's "none", is left out); ``limit`` itself is shared by
every key of the connector and is each key's ``shared_max`` (``pool.shared_max`` in ``pool_info``),
so both limits are visible; a pool may wait below its own ``max`` when other keys hold the
connector's total.

What the numbers mean for aiohttp:

* one borrow per request (and per redirect hop): from ``connect`` until the response is released,
  i.e. its body read, or ``release()``/``close()`` called, or the ``async with`` block left;
* waits happen at the connector's limits; a wait ended by ``ClientTimeout`` is a ``timeout``;
* ``keepalive_timeout`` closes idle connections (``idle_timeout``); ``force_close=True`` closes
  every connection after one use (reason ``other``: churn, visible in creates and evictions);
* proxy URLs, ``proxy_auth`` and ``proxy_headers``, URL userinfo and ``Authorization`` headers are
  never read: identities come from the key's host, port and TLS flag.

See :mod:`poolmon.shims._aiohttp_hooks` and docs/shims-aiohttp.md for the hook points.
"""

from __future__ import annotations

from typing import Final

from poolmon.core.registry import PoolRegistry
from poolmon.shims import _aiohttp_hooks as hooks
from poolmon.shims._aiohttp_hooks import STATE
from poolmon.shims._version import installed_version, supported

__all__ = ["LIBRARY", "SUPPORTED", "available", "instrument", "is_instrumented", "uninstrument"]

LIBRARY: Final = "aiohttp"
SUPPORTED: Final = ">=3.9,<4"


def available() -> bool:
    """aiohttp is installed (importable)."""
    return installed_version(LIBRARY) is not None


def is_instrumented() -> bool:
    return STATE.installed


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch aiohttp's connectors; True if now active. Twice is a no-op.

    An unsupported aiohttp version is reported once and left untouched.
    """
    return STATE.install(registry, ready=lambda: supported(LIBRARY, SUPPORTED), patch=_apply)


def uninstrument() -> None:
    """Restore every original aiohttp attribute exactly (identity, not equality)."""
    STATE.uninstall()


def _apply() -> None:
    from aiohttp import client_proto, connector

    reasons = hooks.close_reasons(connector)
    wrap = STATE.patches.wrap
    base = connector.BaseConnector
    wrap(base, "__init__", hooks.make_init)
    wrap(connector.Connection, "__init__", hooks.make_connection_init)
    wrap(base, "_wait_for_available_connection", hooks.make_wait)
    wrap(base, "_release", hooks.make_release)
    wrap(base, "_close", hooks.make_close_connector)
    for cls in (connector.TCPConnector, connector.UnixConnector):
        if "_create_connection" in vars(cls):
            wrap(cls, "_create_connection", hooks.make_create_connection)
    wrap(client_proto.ResponseHandler, "close", lambda o: hooks.make_proto_close(o, reasons))
