"""The scenario suite: real workloads, one per finding plus a healthy one
(scripts/doctor_scenarios.py).

Each scenario must yield exactly its own finding and the healthy workload none; the table the
script prints is printed here too (``pytest -s``). The over-commit finding must rest on the
limits the test PostgreSQL and Redis really have, read here independently.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import redis

from poolmon.doctor import Report

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "doctor_scenarios", ROOT / "scripts" / "doctor_scenarios.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["doctor_scenarios"] = module
    spec.loader.exec_module(module)
    return module


scenarios = _load()


@pytest.fixture(scope="module")
def reports(pg_dsn: str, redis_url: str) -> Iterator[dict[str, Report]]:
    with scenarios.environment(pg_dsn, redis_url) as env:
        got = scenarios.run_all(env)
    print("\n" + scenarios.table(got))
    yield got


@pytest.mark.parametrize("name", list(scenarios.SCENARIOS))
def test_scenario_yields_exactly_its_finding(reports: dict[str, Report], name: str) -> None:
    kinds = {f.kind for f in reports[name].findings}
    assert kinds == scenarios.EXPECTED[name], reports[name].findings
    assert not [p for p in reports[name].problems if p.down]


def test_every_finding_kind_has_a_scenario() -> None:
    from poolmon.doctor import KINDS

    covered = set().union(*scenarios.EXPECTED.values())
    assert covered == set(KINDS)
    assert scenarios.EXPECTED["healthy"] == frozenset()


def test_table_marks_each_scenario_row(reports: dict[str, Report]) -> None:
    lines = scenarios.table(reports).splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == set(scenarios.SCENARIOS)
    assert rows["healthy"] == ["."] * len(rows["healthy"])
    for name, cells in rows.items():
        assert sum(c != "." for c in cells) == len(scenarios.EXPECTED[name])


def _one(report: Report, kind: str) -> Any:
    [finding] = [f for f in report.findings if f.kind == kind]
    return finding


def test_overcommit_rests_on_the_real_limits(
    reports: dict[str, Report], pg_dsn: str, redis_url: str
) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        total = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        reserved = int(conn.execute("SHOW superuser_reserved_connections").fetchone()[0])  # type: ignore[index]
        row = conn.execute(
            "SELECT setting FROM pg_settings WHERE name = 'reserved_connections'"
        ).fetchone()
        reserved += int(row[0]) if row else 0
    client = redis.Redis.from_url(redis_url)
    maxclients = int(str(client.config_get("maxclients")["maxclients"]))
    client.close()
    found = {f.backend: f for f in reports["overcommit"].findings}
    pg = next(f for b, f in found.items() if b.endswith(":5432") or "5432" in b)
    rd = next(f for b, f in found.items() if "6379" in b)
    assert pg.evidence["limit"] == total - reserved
    assert rd.evidence["limit"] == maxclients
    # The seeds' formula: per pool max = floor(limit x 0.8 / pools).
    assert pg.evidence["per_pool_max"] == (total - reserved) * 8 // 10 // 3
    assert f"max_size={pg.evidence['per_pool_max']})" in pg.advice
    assert pg.severity == rd.severity == "critical"


def test_advice_speaks_each_librarys_terms(reports: dict[str, Report]) -> None:
    under = _one(reports["undersized"], "undersized")
    assert "psycopg_pool: ConnectionPool(max_size=2) -> ConnectionPool(max_size=" in under.advice
    assert under.evidence["demand"] > 2  # Little's law: more concurrent callers than connections
    churn = _one(reports["churn"], "churn")
    assert "HTTPAdapter(pool_maxsize=" in churn.advice
    assert churn.evidence["overflow_discards"] > 0
    assert "Pool(max_size=" in _one(reports["refusals"], "refusals").advice
    assert "eager=False" in _one(reports["storm"], "storm").advice


def test_leak_names_the_borrow_site(reports: dict[str, Report]) -> None:
    leak = _one(reports["leak"], "leak")
    assert "doctor_scenarios.py" in leak.evidence["borrow_site"]
    assert leak.evidence["borrow_site"].endswith("in forgotten_report")
    assert leak.evidence["oldest_use_s"] >= 120.0


def test_breakage_points_at_the_quiet_period(reports: dict[str, Report]) -> None:
    breakage = _one(reports["silent_breakage"], "silent_breakage")
    assert breakage.evidence["after_quiet"] >= 3
    assert breakage.evidence["shortest_quiet_s"] >= 600.0
    assert "idle_timeout=480" in breakage.advice
