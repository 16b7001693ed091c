"""Shared fixtures: a fresh registry per test, and the real services on loopback.

A missing service skips its tests locally but fails them when ``CI=true`` (never a silent skip in
CI). Connection settings come from ``POOLMON_TEST_PG_DSN`` and ``POOLMON_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

from poolmon.core.redact import forget_secrets
from poolmon.core.registry import PoolRegistry, set_default_registry

PG_DSN = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POOLMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (CI=true): a real service or tool is missing."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true", pytrace=False)
    pytest.skip(f"{what} not available")


# The condition is the subject, as with assert (every caller passes an expression).
def require(condition: bool, what: str) -> None:  # noqa: FBT001
    """Skip (locally) or fail (CI=true) when a real service or tool is missing."""
    if not condition:
        missing(what)


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ).close()
    except OSError:
        return False
    return True


@pytest.fixture
def registry() -> Iterator[PoolRegistry]:
    """A fresh default registry for the test; the previous one is restored afterwards."""
    fresh = PoolRegistry()
    previous = set_default_registry(fresh)
    try:
        yield fresh
    finally:
        set_default_registry(previous)
        forget_secrets()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    require(_reachable(PG_DSN, 5432), f"PostgreSQL at {urlsplit(PG_DSN).hostname}")
    return PG_DSN


@pytest.fixture(scope="session")
def redis_url() -> str:
    require(_reachable(REDIS_URL, 6379), f"Redis at {urlsplit(REDIS_URL).hostname}")
    return REDIS_URL


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    require(path is not None, "the prometheus binary (Debian package prometheus)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def promtool_bin() -> str:
    path = shutil.which("promtool")
    require(path is not None, "promtool (Debian package prometheus)")
    assert path is not None
    return path
