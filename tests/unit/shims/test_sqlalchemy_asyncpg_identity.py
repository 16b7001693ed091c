"""Pool identities of the SQLAlchemy and asyncpg shims: names from URLs and keyword arguments,
credentials never in them, and remembered so that error text is scrubbed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry
from poolmon.shims._asyncpg_state import identity_for_pool as asyncpg_identity
from poolmon.shims._sqlalchemy_state import identity_for_pool, limits_of, stamp_engine

SECRET = "pm-i17-unit-Sekr3t"


@pytest.mark.parametrize("stamped", [True, False], ids=["engine-stamp", "connect-closure"])
def test_sqlalchemy_name_from_url_without_credentials(
    registry: PoolRegistry, *, stamped: bool
) -> None:
    engine = sa.create_engine(
        f"postgresql+psycopg://app:{SECRET}@db.internal:6543/orders",
        connect_args={"password": SECRET},
        pool_size=3,
        max_overflow=7,
    )
    if stamped:
        stamp_engine(engine)  # what Engine.__init__'s wrapper does for engines made afterwards
    ident = identity_for_pool(engine.pool)
    assert ident.name == "postgresql+psycopg://db.internal:6543/orders"
    assert (ident.system, ident.server_address, ident.server_port, ident.namespace) == (
        "postgresql",
        "db.internal",
        6543,
        "orders",
    )
    assert SECRET not in repr(ident) and "app" not in ident.name
    assert SECRET not in scrub(f"FATAL: password {SECRET} rejected")
    assert limits_of(engine.pool) == (10, 3)


def test_sqlalchemy_logging_names(registry: PoolRegistry) -> None:
    named_pool = sa.create_engine("sqlite://", pool_logging_name="cache-pool")
    assert identity_for_pool(named_pool.pool).name == "cache-pool"
    named_engine = sa.create_engine("postgresql+psycopg://h/db", logging_name="orders")
    stamp_engine(named_engine)
    assert identity_for_pool(named_engine.pool).name == "orders"


def test_sqlalchemy_unlimited_overflow_has_no_max(registry: PoolRegistry) -> None:
    engine = sa.create_engine("postgresql+psycopg://h/db", pool_size=4, max_overflow=-1)
    assert limits_of(engine.pool) == (None, 4)


def _fake_pool(args: tuple[object, ...], kwargs: dict[str, object]) -> SimpleNamespace:
    return SimpleNamespace(_connect_args=args, _connect_kwargs=kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((f"postgresql://app:{SECRET}@db.internal:6543/orders",), {}),
        ((), {"host": "db.internal", "port": 6543, "database": "orders", "password": SECRET}),
    ],
    ids=["dsn", "keywords"],
)
def test_asyncpg_name_without_credentials(
    registry: PoolRegistry, args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    ident = asyncpg_identity(_fake_pool(args, kwargs))
    assert ident.name == "postgresql://db.internal:6543/orders"
    assert ident.library == "asyncpg" and SECRET not in repr(ident)
    assert SECRET not in scrub(f"password authentication failed: {SECRET}")
