"""Shim for SQLAlchemy's connection pools, sync and asyncio, instrumented in place.

``QueuePool``, ``AsyncAdaptedQueuePool``, ``NullPool``, ``StaticPool``, ``SingletonThreadPool``
and ``AssertionPool``, for engines from ``create_engine`` and ``create_async_engine`` (and pools
made directly), including engines created before :func:`instrument`::

    import poolmon
    poolmon.instrument("sqlalchemy")      # or poolmon.shims.sqlalchemy.instrument(registry=...)

Pool names are ``pool_logging_name``, else the engine's ``logging_name``, else the engine URL
without credentials (``postgresql+psycopg://host:5432/db``). ``max`` is ``pool_size +
max_overflow`` and ``idle.max`` is ``pool_size`` (spec 11.1). What is recorded and where:
:mod:`poolmon.shims._sqlalchemy_hooks` and docs/shims-sqlalchemy.md.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Final

from poolmon.core.compiled import compiled_module
from poolmon.core.registry import PoolRegistry
from poolmon.shims._sqlalchemy_state import (
    STATE,
    detach_all,
    install_fairy_property,
    remove_fairy_property,
)
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

LIBRARY: Final = "sqlalchemy"
#: Hook points verified against SQLAlchemy 2.1.9 (``sqlalchemy/pool/base.py``, ``impl.py``).
SUPPORTED: Final = ">=2.1,<2.2"


def available() -> bool:
    """SQLAlchemy is importable."""
    return importlib.util.find_spec("sqlalchemy") is not None


def _installed_version() -> str | None:
    return installed_version(LIBRARY)


def _ready() -> bool:
    return available() and supported(LIBRARY, SUPPORTED, _installed_version())


def _patch() -> None:
    from sqlalchemy.pool.base import _ConnectionFairy

    from poolmon.shims._sqlalchemy_hooks import patch

    install_fairy_property(_ConnectionFairy)
    patch(STATE.patches, compiled=compiled_module() is not None)


def _detach() -> None:
    if "sqlalchemy.pool.base" in sys.modules:  # imported by _patch; never imported here
        from sqlalchemy.pool.base import _ConnectionFairy

        remove_fairy_property(_ConnectionFairy)
    detach_all()


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Patch SQLAlchemy's pools; True if the shim is now active. Twice changes nothing; an
    unsupported version gets one warning and is left untouched (returns False)."""
    return STATE.install(registry, ready=_ready, patch=_patch, detach=_detach)


def uninstrument() -> None:
    """Restore every patched attribute to the identical original object; forget attached pools."""
    STATE.uninstall()


def is_instrumented() -> bool:
    return STATE.installed
