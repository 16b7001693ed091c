"""The psycopg_pool and redis shims pass the conformance kit on real PostgreSQL and Redis."""

from __future__ import annotations

import json

import pytest

from poolmon.conformance.kit import SCENARIOS, check

from .adapters import PsycopgPoolAdapter, RedisPoolAdapter

pytestmark = pytest.mark.integration


def test_psycopg_pool_shim_passes_the_kit(pg_dsn: str) -> None:
    report = check(PsycopgPoolAdapter(pg_dsn))
    assert set(report.streams) == set(SCENARIOS)
    assert _kinds(report.streams) >= {"create", "borrow", "return", "evict", "close", "error"}


def test_redis_shim_passes_the_kit(redis_url: str) -> None:
    report = check(RedisPoolAdapter(redis_url))
    assert set(report.streams) == set(SCENARIOS)
    assert _kinds(report.streams) >= {"create", "borrow", "return", "evict", "close", "error"}


def _kinds(streams: dict[str, list[str]]) -> set[str]:
    """Every kind of event the scenarios produced (the kit checked them; this shows it saw them).

    Each scenario's stream must be the pool under test alone (the adapters break resources
    through connections outside any pool), so the kit's checks are about that pool."""
    for lines in streams.values():
        assert len({json.loads(line)["pool"] for line in lines}) == 1
    return {json.loads(line)["kind"] for lines in streams.values() for line in lines}
