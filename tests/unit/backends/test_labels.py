"""The application_name label the PostgreSQL shims put on connections they open."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolmon.backends.labels import (
    APPLICATION_NAME_MAX,
    application_name,
    pool_of_application_name,
    postgres_label_kwargs,
)
from poolmon.core.identity import identity_from_libpq_dsn
from poolmon.core.redact import forget_secrets


def test_label_names_the_pool_and_round_trips() -> None:
    label = application_name("postgresql://db.internal:5432/orders")
    assert label == "poolmon postgresql://db.internal:5432/orders"
    assert pool_of_application_name(label) == "postgresql://db.internal:5432/orders"
    assert pool_of_application_name("psql") is None


@given(st.text(max_size=300))
def test_label_is_printable_ascii_within_63_bytes(name: str) -> None:
    label = application_name(name)
    assert len(label.encode()) <= APPLICATION_NAME_MAX
    assert all(" " <= c <= "~" for c in label)
    assert label.startswith("poolmon ")


def test_a_long_name_keeps_its_distinguishing_end() -> None:
    a = application_name("postgresql://a-very-long-host-name.internal.example.com:5432/orders")
    b = application_name("postgresql://a-very-long-host-name.internal.example.com:5432/billing")
    assert a != b and a.endswith("/orders") and "~" in a


def test_a_secret_in_a_user_given_name_is_removed() -> None:
    try:
        identity_from_libpq_dsn("host=db password=hunter2-i19")
        assert "hunter2-i19" not in application_name("pool hunter2-i19")
    finally:
        forget_secrets()


@pytest.mark.parametrize(
    ("conninfo", "kwargs"),
    [
        ("host=db fallback_application_name=mine", {}),
        ("postgresql://u@db/x?sslmode=disable&fallback_application_name=mine", {}),
        ("host=db", {"fallback_application_name": "mine"}),
    ],
)
def test_the_applications_own_fallback_wins(conninfo: str, kwargs: dict[str, object]) -> None:
    assert postgres_label_kwargs(conninfo, kwargs, "p") == {}


@pytest.mark.parametrize(
    "conninfo",
    [
        "host=db dbname=x",
        "postgresql://u@db/x?application_name=app",
        "",
        "host=db application_name=app",
    ],
)
def test_otherwise_a_fallback_is_added(conninfo: str) -> None:
    # An explicit application_name needs no check: libpq prefers it over any fallback.
    assert postgres_label_kwargs(conninfo, {"application_name": "x"}, "p") == {
        "fallback_application_name": "poolmon p"
    }


def test_label_psycopg_pool_handles_every_kwargs_shape() -> None:
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from poolmon.backends.labels import label_psycopg_pool

    shared = {"prepare_threshold": None}
    a = ConnectionPool("host=db", kwargs=shared, open=False)
    assert label_psycopg_pool(a, "p") and a.kwargs == {
        **shared,
        "fallback_application_name": "poolmon p",
    }
    assert shared == {"prepare_threshold": None}  # the caller's dict is not mutated
    restored = ConnectionPool("host=db", kwargs=shared, open=False)
    undo = label_psycopg_pool(restored, "p")
    assert undo is not None
    undo()
    assert restored.kwargs is shared  # uninstrument() leaves the pool exactly as it was
    none = ConnectionPool("host=db", open=False)
    assert label_psycopg_pool(none, "p") and none._resolve_kwargs()["fallback_application_name"]
    own = ConnectionPool("host=db fallback_application_name=mine", open=False)
    assert not label_psycopg_pool(own, "p") and not own.kwargs
    dynamic = ConnectionPool("host=db", kwargs=lambda: {"autocommit": True}, open=False)
    assert label_psycopg_pool(dynamic, "p")
    assert dynamic._resolve_kwargs() == {
        "autocommit": True,
        "fallback_application_name": "poolmon p",
    }
    opaque = ConnectionPool(lambda: "host=db", open=False)
    assert not label_psycopg_pool(opaque, "p")

    async def factory() -> dict[str, object]:
        return {"autocommit": True}

    async_pool = AsyncConnectionPool("host=db", kwargs=factory, open=False)
    assert label_psycopg_pool(async_pool, "p")
    import asyncio

    resolved = asyncio.run(async_pool._resolve_kwargs())
    assert resolved == {"autocommit": True, "fallback_application_name": "poolmon p"}


def test_label_psycopg2_pool() -> None:
    psycopg2_pool = pytest.importorskip("psycopg2.pool")
    from poolmon.backends.labels import label_psycopg2_pool

    class Unopened(psycopg2_pool.SimpleConnectionPool):  # type: ignore[misc, name-defined]
        def _connect(self, key: object = None) -> None:  # no server needed for the logic
            return None

    pool = Unopened(0, 2, "host=db dbname=x", connect_timeout=3)
    before = pool._kwargs
    undo = label_psycopg2_pool(pool, "p")
    assert undo is not None
    assert pool._kwargs == {"connect_timeout": 3, "fallback_application_name": "poolmon p"}
    undo()
    assert pool._kwargs is before
    own = Unopened(0, 2, dsn="host=db fallback_application_name=mine")
    assert not label_psycopg2_pool(own, "p")
