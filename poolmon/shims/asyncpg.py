"""Shim for asyncpg's connection pool (``asyncpg.create_pool``), instrumented in place.

Usage::

    import poolmon
    poolmon.instrument("asyncpg")        # or poolmon.shims.asyncpg.instrument(registry=...)

Pool names are ``postgresql://host:port/database`` from the DSN or keyword arguments; passwords
(``password=`` or in the DSN) never reach the identity and are remembered so that error messages
are scrubbed. What is recorded, and where: :mod:`poolmon.shims._asyncpg_hooks` and
docs/shims-asyncpg.md.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from poolmon.core.registry import PoolRegistry
from poolmon.shims._asyncpg_state import STATE, detach_all
from poolmon.shims._version import installed_version, supported

__all__ = [
    "LIBRARY",
    "STATE",
    "SUPPORTED",
    "available",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

LIBRARY: Final = "asyncpg"
#: Hook points verified against asyncpg 0.32.0 (``asyncpg/pool.py``, ``connection.py``).
SUPPORTED: Final = ">=0.30,<0.33"


def available() -> bool:
    """asyncpg is importable."""
    return importlib.util.find_spec("asyncpg") is not None


def _installed_version() -> str | None:
    return installed_version(LIBRARY)


def _ready() -> bool:
    return available() and supported(LIBRARY, SUPPORTED, _installed_version())


def _patch() -> None:
    from poolmon.shims._asyncpg_hooks import patch

    patch(STATE.patches)


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch asyncpg's pool; True if the shim is now active. Twice changes nothing; an
    unsupported version gets one warning and is left untouched (returns False)."""
    return STATE.install(registry, ready=_ready, patch=_patch, detach=detach_all)


def uninstrument() -> None:
    """Restore every patched attribute to the identical original object; forget every pool."""
    STATE.uninstall()


def is_instrumented() -> bool:
    return STATE.installed
