"""Rule arithmetic on hand-made windows (logic only; the real workloads are in integration)."""

from __future__ import annotations

import math

from poolmon.doctor import BackendLimit, PoolWindow, Thresholds, diagnose_windows
from poolmon.doctor.backend import limits_from_prometheus, parse_limit
from poolmon.doctor.rules import borrow_site
from poolmon.top.samples import WAIT_BOUNDS, PoolSample


def _cumulative(bounds: tuple[float, ...], values: list[float]) -> tuple[float, ...]:
    return (*(float(sum(v <= b for v in values)) for b in bounds), float(len(values)))


def _saturated(
    name: str = "p", *, backend: str = "db", library: str = "psycopg-pool"
) -> PoolSample:
    # 100 borrows over 10 s: 80 waited 20 ms, each held 50 ms; max 2 with both in use.
    waits = [0.0] * 20 + [0.02] * 80
    uses = [0.05] * 100
    return PoolSample(
        name=name,
        system="postgresql",
        server_address=backend,
        server_port="5432",
        library=library,
        used=2,
        max=2,
        wait_cumulative=_cumulative(WAIT_BOUNDS, waits),
        wait_sum=sum(waits),
        use_count=float(len(uses)),
        use_sum=sum(uses),
        creates=2,
    )


def test_littles_law_sizes_the_pool() -> None:
    window = PoolWindow(source="s", last=_saturated(), seconds=10.0, window="10s")
    [finding] = diagnose_windows([window]).findings
    assert finding.kind == "undersized"
    # 10 borrows/s x (50 ms + 16 ms) = 0.66 callers -> never below max + 1.
    assert math.isclose(finding.evidence["demand"], 10 * (0.05 + 0.016))
    assert "ConnectionPool(max_size=2) -> ConnectionPool(max_size=3)" in finding.advice


def test_size_is_capped_by_the_backend_share() -> None:
    sample = _saturated()
    window = PoolWindow(source="s", last=sample, seconds=0.1, window="0.1s")  # 1000 borrows/s
    free = diagnose_windows([window]).findings[0]
    capped = diagnose_windows(
        [window], limits=[BackendLimit("postgresql", "db:5432", 10, "t")]
    ).findings
    undersized = next(f for f in capped if f.kind == "undersized")
    assert free.advice.endswith("headroom)") and "max_size=83" in free.advice
    assert undersized.evidence["backend_share"] == 8  # floor(10 x 0.8 / 1)
    assert "max_size=8)" in undersized.advice and "capped" in undersized.advice


def test_overcommit_per_pool_formula() -> None:
    pools = [
        PoolWindow(
            source=f"i{i}",
            last=PoolSample(
                name="p",
                system="redis",
                server_address="r",
                server_port="6379",
                pid=str(i),
                max=500,
            ),
        )
        for i in range(4)
    ]
    report = diagnose_windows(pools, limits=[parse_limit("r:6379=1000")])
    [finding] = report.findings
    assert finding.kind == "overcommit" and finding.pool is None
    assert finding.evidence["per_pool_max"] == math.floor(1000 * 0.8 / 4)
    assert finding.severity == "critical"  # 2000 > 1000
    under = diagnose_windows(pools, limits=[parse_limit("r:6379=2400")]).findings
    assert [f.severity for f in under] == ["warning"]  # 2000 > 0.8 x 2400 but within the limit
    assert diagnose_windows(pools, limits=[parse_limit("r:6379=3000")]).findings == ()


def test_thresholds_change_the_verdict() -> None:
    window = PoolWindow(source="s", last=_saturated(), seconds=10.0)
    assert diagnose_windows([window], thresholds=Thresholds(saturation=1.0)).findings
    assert not diagnose_windows([window], thresholds=Thresholds(wait_threshold=0.05)).findings


def test_borrow_site_skips_poolmon_and_stdlib_frames() -> None:
    stack = (
        '  File "/srv/app/jobs.py", line 10, in main\n    run()\n'
        '  File "/srv/app/report.py", line 41, in build\n    conn = pool.getconn()\n'
        '  File "/usr/lib/python3.11/contextlib.py", line 137, in __enter__\n    x\n'
        '  File "/site-packages/poolmon/pool/sync_pool.py", line 300, in getconn\n    y\n'
    )
    assert borrow_site(stack) == "/srv/app/report.py:41 in build"
    assert borrow_site(None) is None


def test_limits_from_exporter_series() -> None:
    series = {
        "pg_settings_max_connections": [({"server": "db:5432"}, "200")],
        "pg_settings_superuser_reserved_connections": [({"server": "db:5432"}, "3")],
        "redis_config_maxclients": [({"instance": "redis://cache:6379"}, "10000")],
    }

    def query(promql: str) -> list[dict[str, object]]:
        return [{"metric": m, "value": [0, v]} for m, v in series.get(promql, [])]

    got = {(lim.system, lim.backend): lim.limit for lim in limits_from_prometheus(query)}
    assert got == {("postgresql", "db:5432"): 197, ("redis", "cache:6379"): 10000}
