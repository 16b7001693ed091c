"""The fuzz suite's shared settings and fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import MetricsServer, serve
from tests.fuzz.strategies import Places

#: Bounded and reproducible: the same examples on every run and machine (derandomize), no
#: example database, no per-example deadline (2 loaded cores make timings meaningless).
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: The pool the good source serves: "the rest keeps working" means this row is still there.
GOOD_POOL = "redis://cache:6379/0"


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> Places:
    return Places(tmp_path_factory.mktemp("fuzz-places"))


@pytest.fixture(scope="module")
def good_source() -> Iterator[MetricsServer]:
    """A real /metrics endpoint (loopback) holding one pool."""
    registry = PoolRegistry()
    ledger = registry.register(identity_from_url("redis://:pw@cache:6379/0"), max_size=4)
    ledger.create(ledger.now())
    with serve(0, registry=registry) as server:
        yield server


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-files")
