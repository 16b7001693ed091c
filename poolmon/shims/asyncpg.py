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
import threading
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

_lock: Final = threading.Lock()


def available() -> bool:
    """asyncpg is importable."""
    return importlib.util.find_spec("asyncpg") is not None


def _installed_version() -> str | None:
    return installed_version(LIBRARY)


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch asyncpg's pool; True if the shim is now active. Twice changes nothing; an
    unsupported version gets one warning and is left untouched (returns False)."""
    if not available():
        return False
    with _lock:
        if STATE.patches.active:
            return True
        if not supported(LIBRARY, SUPPORTED, _installed_version()):
            return False
        from poolmon.shims._asyncpg_hooks import patch

        STATE.start(registry)
        try:
            patch(STATE.patches)
        except Exception:
            STATE.patches.restore()
            detach_all()
            raise
        return True


def uninstrument() -> None:
    """Restore every patched attribute to the identical original object; forget every pool."""
    with _lock:
        STATE.patches.restore()
        detach_all()


def is_instrumented() -> bool:
    return STATE.patches.active
