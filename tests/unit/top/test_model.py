"""Rates, windowed quantiles, fleet totals, sorting and filtering (pure data, no clock)."""

from __future__ import annotations

import pytest

from poolmon.core.snapshot import HistogramSnapshot
from poolmon.errors import ConfigError
from poolmon.top.model import SORT_KEYS, TopModel, quantile_from_cumulative, select_rows
from poolmon.top.samples import WAIT_BOUNDS, PoolSample, SourceResult


def _wait(values: list[float]) -> tuple[float, ...]:
    counts = [0] * (len(WAIT_BOUNDS) + 1)
    from bisect import bisect_left

    for v in values:
        counts[bisect_left(WAIT_BOUNDS, v)] += 1
    return tuple(float(c) for c in HistogramSnapshot(WAIT_BOUNDS, tuple(counts), 0.0).cumulative())


def _sample(name: str = "p", **kw: object) -> PoolSample:
    base: dict[str, object] = {"max": 10.0, "server_address": "db", "server_port": "5432"}
    base.update(kw)
    return PoolSample(name=name, **base)  # type: ignore[arg-type]


def _result(t: float, *samples: PoolSample, source: str = "a") -> SourceResult:
    return SourceResult(source, ok=True, taken_at=t, pools=samples)


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_quantile_matches_the_snapshot_estimate(q: float) -> None:
    values = [0.0002, 0.003, 0.003, 0.04, 0.2, 0.2, 0.7, 3.0, 40.0]
    from bisect import bisect_left

    counts = [0] * (len(WAIT_BOUNDS) + 1)
    for v in values:
        counts[bisect_left(WAIT_BOUNDS, v)] += 1
    snap = HistogramSnapshot(WAIT_BOUNDS, tuple(counts), sum(values))
    assert quantile_from_cumulative(WAIT_BOUNDS, snap.cumulative(), q) == pytest.approx(
        snap.quantile(q)
    )
    assert quantile_from_cumulative(WAIT_BOUNDS, (0.0,) * 19, q) is None


def test_rates_from_successive_samples() -> None:
    model = TopModel(window=10)
    first = model.update([_result(100.0, _sample(creates=10, evictions={"broken": 1.0}))])
    (row,) = first.rows
    assert row.creates_per_s is None and row.eviction_rate is None  # one sample: no rate yet
    second = model.update(
        [_result(102.0, _sample(creates=16, evictions={"broken": 5.0, "idle_timeout": 0.0}))]
    )
    (row,) = second.rows
    assert row.creates_per_s == pytest.approx(3.0)
    assert row.evictions_per_s == {"broken": pytest.approx(2.0)}
    assert row.eviction_rate == pytest.approx(2.0)


def test_counter_reset_counts_the_new_value_as_the_increase() -> None:
    model = TopModel()
    model.update([_result(0.0, _sample(creates=100))])
    (row,) = model.update([_result(1.0, _sample(creates=4))]).rows
    assert row.creates_per_s == pytest.approx(4.0)


def test_same_scrape_time_keeps_the_rate() -> None:
    """Prometheus repeats a value until its next scrape: an unchanged time is no new sample."""
    model = TopModel()
    model.update([_result(10.0, _sample(creates=0))])
    model.update([_result(15.0, _sample(creates=10))])
    (row,) = model.update([_result(15.0, _sample(creates=10))]).rows
    assert row.creates_per_s == pytest.approx(2.0)
    assert len(row.history) == 2


def test_wait_quantiles_cover_the_recent_window() -> None:
    model = TopModel(window=2)
    slow = _wait([2.0] * 100)
    (row,) = model.update([_result(0.0, _sample(wait_cumulative=slow))]).rows
    assert not row.wait_recent and row.wait_p50 == pytest.approx(1.75, rel=0.2)
    fast = tuple(a + b for a, b in zip(slow, _wait([0.0003] * 50), strict=True))
    (row,) = model.update([_result(1.0, _sample(wait_cumulative=fast))]).rows
    assert row.wait_recent
    assert row.wait_p95 is not None and row.wait_p95 <= 0.0005  # old slow waits are not recent
    (row,) = model.update([_result(2.0, _sample(wait_cumulative=fast))]).rows
    (row,) = model.update([_result(3.0, _sample(wait_cumulative=fast))]).rows
    assert row.wait_p95 is None  # no borrow in the window


def test_saturation_history_and_pool_leaving() -> None:
    model = TopModel(history=3)
    for t, used in enumerate([1.0, 5.0, 9.0, 10.0]):
        frame = model.update([_result(float(t), _sample(used=used))])
    assert frame.rows[0].history == (0.5, 0.9, 1.0)
    frame = model.update([_result(9.0, _sample(name="other"))])
    assert [r.name for r in frame.rows] == ["other"]
    (row,) = model.update([_result(10.0, _sample(used=1.0))]).rows
    assert row.history == (0.1,)  # "p" left and came back: a fresh history


def test_down_source_is_reported_and_keeps_its_memory() -> None:
    model = TopModel()
    model.update([_result(0.0, _sample(creates=0))])
    frame = model.update([SourceResult("a", ok=False, taken_at=1.0, error="connection refused")])
    assert frame.rows == ()
    assert frame.sources[0].ok is False and frame.sources[0].error == "connection refused"
    (row,) = model.update([_result(2.0, _sample(creates=4))]).rows
    assert row.creates_per_s == pytest.approx(2.0)


def test_fleet_totals_per_backend_across_sources() -> None:
    model = TopModel()
    frame = model.update(
        [
            _result(
                0.0,
                _sample("x", used=2, idle=1, pid="1"),
                _sample("y", used=1, max=None, server_address="cache", system="redis", pid="1"),
                source="host1",
            ),
            _result(0.0, _sample("x", used=5, idle=0, pending=2, pid="2"), source="host2"),
        ]
    )
    by_backend = {(b.system, b.backend): b for b in frame.backends}
    db = by_backend[("generic", "db:5432")]
    assert (db.pools, db.instances, db.used, db.idle, db.pending, db.max) == (2, 2, 7, 1, 2, 20)
    assert db.saturation == pytest.approx(0.35)
    cache = by_backend[("redis", "cache:5432")]
    assert cache.max is None and cache.saturation is None


def test_sort_and_filter() -> None:
    model = TopModel()
    frame = model.update(
        [
            _result(
                0.0,
                _sample("alpha", used=1),
                _sample("beta", used=9),
                _sample("Gamma", used=5, system="redis"),
            )
        ]
    )
    assert [r.name for r in select_rows(frame.rows, "saturation")] == ["beta", "Gamma", "alpha"]
    assert next(r.name for r in select_rows(frame.rows, "used", reverse=True)) == "alpha"
    assert [r.name for r in select_rows(frame.rows, "name")] == ["alpha", "beta", "Gamma"]
    assert [r.name for r in select_rows(frame.rows, "name", text="REDIS")] == ["Gamma"]
    assert select_rows(frame.rows, "name", text="nothing") == []
    for key in SORT_KEYS:
        assert len(select_rows(frame.rows, key)) == 3
    with pytest.raises(ConfigError, match="sort='size' is invalid: expected one of saturation"):
        select_rows(frame.rows, "size")


def test_json_document_shape() -> None:
    frame = TopModel().update([_result(0.0, _sample(used=3))])
    doc = frame.to_dict()
    assert doc["pools"][0]["name"] == "p" and doc["pools"][0]["saturation"] == pytest.approx(0.3)
    assert doc["backends"][0]["used"] == 3 and doc["sources"][0]["ok"] is True
