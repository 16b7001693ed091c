"""Pool identity: the name rules of the standard (spec/README.md section 5)."""

from __future__ import annotations

import os

import pytest

from poolmon.core.identity import (
    PoolIdentity,
    derive_name,
    identity_from_kwargs,
    identity_from_libpq_dsn,
    identity_from_url,
)
from poolmon.core.registry import PoolRegistry


@pytest.mark.parametrize(
    ("url", "name", "system", "host", "port", "namespace"),
    [
        ("postgresql://app:pw@db.internal:5433/orders", "postgresql://db.internal:5433/orders",
         "postgresql", "db.internal", 5433, "orders"),
        ("postgres://db/orders", "postgresql://db:5432/orders", "postgresql", "db", 5432, "orders"),
        ("redis://:pw@cache:6379/2", "redis://cache:6379/2", "redis", "cache", 6379, "2"),
        ("rediss://cache.internal", "redis://cache.internal:6379", "redis", "cache.internal",
         6379, None),
        ("https://user:pw@api.example.com/v1/x?q=1", "https://api.example.com:443", "http",
         "api.example.com", 443, None),
        ("http://[::1]:8080/", "http://[::1]:8080", "http", "::1", 8080, None),
        ("postgresql://app@db.internal/my%20db", "postgresql://db.internal:5432/my db",
         "postgresql", "db.internal", 5432, "my db"),
    ],
)  # fmt: skip
def test_identity_from_url(
    url: str, name: str, system: str, host: str, port: int, namespace: str | None
) -> None:
    ident = identity_from_url(url)
    assert (ident.name, ident.system, ident.server_address, ident.server_port, ident.namespace) == (
        name,
        system,
        host,
        port,
        namespace,
    )
    assert ident.pid == os.getpid()


def test_identity_from_libpq_kv_dsn() -> None:
    ident = identity_from_libpq_dsn(
        "host=db1.internal,db2.internal port=5433,5434 dbname='my orders' user=app password=x",
        library="psycopg_pool",
        library_version="3.3.0",
    )
    # With several hosts the first one names the pool.
    assert ident.name == "postgresql://db1.internal:5433/my orders"
    assert (ident.library, ident.library_version) == ("psycopg_pool", "3.3.0")


def test_identity_from_libpq_unix_socket_and_kwarg_overrides() -> None:
    ident = identity_from_libpq_dsn("host=/var/run/postgresql", {"dbname": "app", "port": 6000})
    assert ident.name == "postgresql://localhost:6000/app"
    ident = identity_from_libpq_dsn("postgresql://db.internal/orders", {"dbname": "other"})
    assert ident.name == "postgresql://db.internal:5432/other"


def test_identity_from_kwargs() -> None:
    ident = identity_from_kwargs("redis", {"host": "cache", "port": "6380", "db": 0})
    assert ident.name == "redis://cache:6380/0"
    assert ident.as_attributes() == {
        "pool.name": "redis://cache:6380/0",
        "pool.system": "redis",
        "process.pid": str(os.getpid()),
        "server.address": "cache",
        "server.port": "6380",
        "db.namespace": "0",
    }
    assert identity_from_kwargs("redis", {"unix_socket_path": "/tmp/r.sock"}).name == (
        "redis://localhost:6379"
    )


def test_derive_name_and_user_names() -> None:
    assert derive_name("generic", "worker-pool", None) == "generic://worker-pool"
    assert derive_name("postgresql", None, 5432, "x") == "postgresql://localhost:5432/x"
    assert derive_name("http", "2001:db8::1", 80) == "http://[2001:db8::1]:80"
    assert identity_from_url("redis://cache", name="sessions").name == "sessions"


def test_registry_suffixes_duplicate_names_in_registration_order() -> None:
    registry = PoolRegistry()
    ident = PoolIdentity("postgresql://db:5432/orders")
    names = [registry.register(ident).name for _ in range(3)]
    assert names == [
        "postgresql://db:5432/orders",
        "postgresql://db:5432/orders#2",
        "postgresql://db:5432/orders#3",
    ]


def test_with_pid_and_with_name_keep_the_rest() -> None:
    ident = identity_from_url("redis://cache:6379/1", library="redis")
    child = ident.with_pid(4321)
    assert (child.pid, child.name, child.library) == (4321, ident.name, "redis")
    assert ident.with_name("other").server_address == "cache"
