"""The SQLAlchemy and asyncpg shims are reachable every way a user turns shims on: the SHIMS
table (``poolmon.instrument()``, ``poolmon run``), the ``opentelemetry_instrumentor`` entry
points, and the extras with their tested ranges."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import tomllib

import poolmon
from poolmon.core.registry import PoolRegistry
from poolmon.shims import SHIMS, instrumented

ROOT = Path(__file__).resolve().parents[3]

CASES = [
    ("sqlalchemy", "SQLAlchemyPoolInstrumentor", "sqlalchemy >=2.1,<2.2"),
    ("asyncpg", "AsyncpgPoolInstrumentor", "asyncpg >=0.30,<0.33"),
]


@pytest.mark.parametrize(("shim", "cls", "dependency"), CASES)
def test_entry_point_and_instrumentor(
    registry: PoolRegistry, shim: str, cls: str, dependency: str
) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    from poolmon.shims import instrumentors

    names = {ep.name: ep.value for ep in entry_points(group="opentelemetry_instrumentor")}
    assert names[f"poolmon_{shim}"] == f"poolmon.shims.instrumentors:{cls}"
    instrumentor: Any = getattr(instrumentors, cls)()
    assert list(instrumentor.instrumentation_dependencies()) == [dependency]
    module = importlib.import_module(SHIMS[shim])
    provider = MeterProvider()
    instrumentor.instrument(meter_provider=provider)
    try:
        assert module.is_instrumented() and shim in instrumented()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    assert not module.is_instrumented()


def test_instrument_all_includes_both(registry: PoolRegistry) -> None:
    active = poolmon.instrument()
    try:
        assert {"sqlalchemy", "asyncpg"} <= set(active)
    finally:
        poolmon.uninstrument()
    assert not {"sqlalchemy", "asyncpg"} & set(instrumented())


def test_extras_carry_the_tested_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["sqlalchemy"] == ["sqlalchemy[asyncio]>=2.1,<2.2"]
    assert extras["asyncpg"] == ["asyncpg>=0.30,<0.33"]
    for shim, _, dependency in CASES:
        module = importlib.import_module(SHIMS[shim])
        assert dependency == f"{module.LIBRARY} {module.SUPPORTED}"
