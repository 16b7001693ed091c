"""Version gating for shims: an unsupported library version is announced once and left alone."""

from __future__ import annotations

import logging
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from poolmon.core.selfmetrics import log_once

__all__ = ["installed_version", "supported"]

_log = logging.getLogger("poolmon")


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def supported(distribution: str, specifier: str, version: str | None = None) -> bool:
    """True when ``distribution`` is installed at a version in ``specifier``; else warn once."""
    found = version if version is not None else installed_version(distribution)
    if found is None:
        return False
    try:
        ok = Version(found) in SpecifierSet(specifier)
    except InvalidVersion:
        ok = False
    if not ok:
        log_once(
            _log,
            f"unsupported:{distribution}:{found}",
            "poolmon: %s %s is outside the supported range %s; leaving it uninstrumented",
            distribution,
            found,
            specifier,
        )
    return ok
