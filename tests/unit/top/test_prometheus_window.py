"""PrometheusSource's window query and how its answers reach the model (the transport is a stub
returning recorded API answers; the real server is in tests/integration/top)."""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any

import pytest

from poolmon.errors import ConfigError
from poolmon.top.model import TopModel
from poolmon.top.sources import PrometheusSource, window_query


def _vector(*items: tuple[dict[str, str], float]) -> bytes:
    result = [{"metric": m, "value": [1700000000.0, repr(v)]} for m, v in items]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


def _answers(window: list[tuple[dict[str, str], float]]) -> Any:
    info = {"__name__": "pool_info", "pool_name": "p", "instance": "a:1", "job": "j"}
    count = {
        "__name__": "pool_connection_create_time_seconds_count",
        "pool_name": "p",
        "instance": "a:1",
        "job": "j",
        "outcome": "ok",
    }

    def getter(url: str, timeout: float, accept: str) -> bytes:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["query"][0]
        if query.startswith("{__name__"):
            return _vector((info, 1.0), (count, 5.0))
        if query.startswith("timestamp"):
            return _vector((info, 1700000000.0))
        if query == "up":
            return _vector(({"instance": "a:1", "job": "j"}, 1.0))
        assert query == window_query("1m")
        return _vector(*window)

    return getter


def _tagged(part: str, **labels: str) -> dict[str, str]:
    return {"pool_name": "p", "instance": "a:1", "job": "j", "poolmon_window": part, **labels}


def test_first_frame_has_the_window_rates_and_quantiles() -> None:
    source = PrometheusSource(
        "http://prom:9090",
        getter=_answers(
            [
                (_tagged("creates", outcome="ok"), 2.0),
                (_tagged("creates", outcome="error"), 0.5),
                (_tagged("evictions", pool_eviction_reason="idle_timeout"), 0.25),
                (_tagged("evictions", pool_eviction_reason="broken"), 0.0),
                (_tagged("errors", error_type="timeout"), 1.0),
                (_tagged("errors", error_type="create_failed"), 0.5),
                (_tagged("wait_q0.5"), 0.001),
                (_tagged("wait_q0.95"), 0.01),
                (_tagged("wait_q0.99"), 0.1),
            ]
        ),
    )
    (row,) = TopModel().update(source.fetch()).rows
    assert row.creates_per_s == 2.0
    assert dict(row.evictions_per_s) == {"idle_timeout": 0.25}
    assert row.errors_per_s == 1.5
    assert (row.wait_p50, row.wait_p95, row.wait_p99) == (0.001, 0.01, 0.1)
    assert row.wait_recent is True


def test_nobody_waited_in_the_window_gives_no_quantiles_but_rates_known() -> None:
    nan = math.nan
    source = PrometheusSource(
        "http://prom:9090",
        getter=_answers(
            [(_tagged("creates", outcome="ok"), 0.0)]
            + [(_tagged(f"wait_q{q}"), nan) for q in ("0.5", "0.95", "0.99")]
        ),
    )
    (row,) = TopModel().update(source.fetch()).rows
    assert row.creates_per_s == 0.0 and row.wait_p95 is None and row.wait_recent


def test_a_pool_the_window_does_not_cover_falls_back_to_refresh_differences() -> None:
    (row,) = TopModel().update(PrometheusSource("prom:9090", getter=_answers([])).fetch()).rows
    assert row.creates_per_s is None and not row.wait_recent


def test_window_must_be_a_promql_duration() -> None:
    with pytest.raises(ConfigError, match="window='1 minute' is invalid: expected a PromQL"):
        PrometheusSource("prom:9090", window="1 minute")
    assert "[5m]" in window_query("5m") and "histogram_quantile(0.99" in window_query("5m")
