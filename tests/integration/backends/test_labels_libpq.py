"""libpq itself applies the label only when the application named nothing (PGAPPNAME included)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from poolmon.backends.labels import application_name, postgres_label_kwargs


def _seen(pg_dsn: str, **kwargs: Any) -> str:
    with psycopg.connect(pg_dsn, autocommit=True, **kwargs) as conn:
        row = conn.execute("SELECT current_setting('application_name')").fetchone()
    assert row is not None
    return str(row[0])


def test_label_applies_only_without_an_application_name(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = f"i19-label-{uuid.uuid4().hex[:6]}"
    monkeypatch.delenv("PGAPPNAME", raising=False)
    added = postgres_label_kwargs(pg_dsn, {}, pool)
    assert _seen(pg_dsn, **added) == application_name(pool)
    # The application's own name, by keyword or by environment, always wins.
    assert _seen(pg_dsn, application_name="the-app", **added) == "the-app"
    monkeypatch.setenv("PGAPPNAME", "from-env")
    assert _seen(pg_dsn, **added) == "from-env"


def test_a_labelled_psycopg_pool_shows_its_pool_in_pg_stat_activity(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psycopg_pool import ConnectionPool

    from poolmon.backends.labels import label_psycopg_pool

    monkeypatch.delenv("PGAPPNAME", raising=False)
    name = f"i19-labelled-{uuid.uuid4().hex[:6]}"
    pool = ConnectionPool(pg_dsn, min_size=2, max_size=2, open=False)
    assert label_psycopg_pool(pool, name)
    pool.open(wait=True)
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name(name),),
            ).fetchone()
        assert row is not None and row[0] == 2
    finally:
        pool.close()
