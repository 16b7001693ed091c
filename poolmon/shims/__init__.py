"""Shims: instrument existing library pools in place.

Each shim module (``poolmon.shims.psycopg``, ``.psycopg2``, ``.redis``, ``.urllib3``,
``.sqlalchemy``, ``.asyncpg``, ``.httpcore`` (named ``"httpx"``), ``.aiohttp``) provides::

    LIBRARY: str                 # the distribution gating the shim, e.g. "psycopg-pool"
    SUPPORTED: str               # PEP 440 specifier of supported versions, e.g. ">=3.1,<4"
    def available() -> bool      # the library is importable
    def instrument(registry: PoolRegistry | None = None) -> bool   # True if now active
    def uninstrument() -> None   # restores every original object exactly
    def is_instrumented() -> bool

``instrument()`` on an unsupported version logs one warning and leaves the library untouched.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Final

from poolmon.core.registry import PoolRegistry

__all__ = ["SHIMS", "instrument", "instrumented", "uninstrument"]

_log = logging.getLogger("poolmon")

#: Shim name -> module. The name is what ``poolmon.instrument("redis")`` takes.
SHIMS: Final[dict[str, str]] = {
    "psycopg": "poolmon.shims.psycopg",
    "psycopg2": "poolmon.shims.psycopg2",
    "redis": "poolmon.shims.redis",
    "urllib3": "poolmon.shims.urllib3",
    "futures": "poolmon.shims.futures",
    "api": "poolmon.shims.api",
    "sqlalchemy": "poolmon.shims.sqlalchemy",
    "asyncpg": "poolmon.shims.asyncpg",
    # httpx sends every request through httpcore's pools: the shim patches httpcore.
    "httpx": "poolmon.shims.httpcore",
    "aiohttp": "poolmon.shims.aiohttp",
}


def _module(name: str) -> ModuleType:
    try:
        path = SHIMS[name]
    except KeyError:
        raise ValueError(
            f"unknown shim {name!r}: expected one of {', '.join(sorted(SHIMS))}"
        ) from None
    return importlib.import_module(path)


def instrument(*names: str, registry: PoolRegistry | None = None) -> list[str]:
    """Instrument the named libraries, or every supported installed one when none is named.

    Returns the names now instrumented. A library that is not installed is skipped when no names
    were given and reported with ``ValueError`` when named explicitly.
    """
    chosen = names or tuple(SHIMS)
    active: list[str] = []
    for name in chosen:
        module = _module(name)
        if not module.available():
            if names:
                raise ValueError(f"cannot instrument {name!r}: {module.LIBRARY} is not installed")
            continue
        if module.instrument(registry=registry):
            active.append(name)
    return active


def uninstrument(*names: str) -> None:
    """Undo :func:`instrument` for the named libraries (all when none is named)."""
    for name in names or tuple(SHIMS):
        module = _module(name)
        if module.available():
            module.uninstrument()


def instrumented() -> list[str]:
    """Names of the shims active now."""
    out = []
    for name in SHIMS:
        module = _module(name)
        if module.available() and module.is_instrumented():
            out.append(name)
    return out
