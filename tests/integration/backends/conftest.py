"""A PgBouncer per test module, in front of the test PostgreSQL (tests/support/pgbouncer.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require
from tests.support.pgbouncer import PgBouncer, pgbouncer_binary


@pytest.fixture
def bouncer(pg_dsn: str) -> Iterator[PgBouncer]:
    require(pgbouncer_binary() is not None, "pgbouncer (Debian package pgbouncer)")
    with PgBouncer(pg_dsn, pool_size=3) as b:
        yield b
