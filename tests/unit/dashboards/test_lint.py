"""The committed dashboard obeys the house rules, and each rule catches its violation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from poolmon.dashboards.lint import (
    counter_names,
    exported_metric_names,
    iter_panels,
    lint_dashboard,
)
from poolmon.dashboards.panels import ROWS, all_panels

REPO = Path(__file__).resolve().parents[3]
DOCUMENT: dict[str, Any] = json.loads((REPO / "dashboards" / "poolmon-pools.json").read_text())


def test_committed_dashboard_is_lint_clean() -> None:
    assert lint_dashboard(DOCUMENT) == []


def test_rows_cover_the_issue() -> None:
    titles = [p["title"] for p in DOCUMENT["panels"] if p["type"] == "row"]
    assert titles == [r.title for r in ROWS]
    assert titles == [
        "Overview",
        "Saturation and headroom",
        "Streams (multiplexed connections: HTTP/2)",
        "Wait time",
        "Errors, timeouts and churn",
        "Lifetime and use",
        "Fleet capacity",
        "Backend capacity",  # issue 19: backends and PgBouncer pools (spec section 12)
        "Inventory",
        "Tenants and routes",  # issue 23: tenants, shed, bursts, routing (spec 1.1 section 14)
    ]
    kinds = {p["type"] for p in iter_panels(DOCUMENT)}
    assert {"heatmap", "table", "timeseries", "stat"} <= kinds
    exprs = " ".join(t["expr"] for p in iter_panels(DOCUMENT) for t in p["targets"])
    for needle in (
        "ALERTS",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "pool_connection_wait_time_seconds_bucket",
        "pool_eviction_reason",
        "group_left (pool_system, server_address, server_port)",
        "$backend_limit",
        'pool_tenant=~"$tenant"',
        'error_type="quota_exceeded"',
        'error_type="shed"',
        'error_type="failover"',
        'pool_eviction_reason="burst_shrink"',
        "pool_connection_burst_max",
        "pool_route_info",
    ):
        assert needle in exprs, needle


def test_optional_views_sit_in_a_collapsed_row_with_a_tenant_variable() -> None:
    """Spec 1.1 section 14's views: only some pools have them, so their row starts collapsed
    (its panels nested in it), and the tenant variable lists the tenant series' names."""
    (row,) = [p for p in DOCUMENT["panels"] if p.get("title") == "Tenants and routes"]
    assert row["type"] == "row" and row["collapsed"] is True
    assert len(row["panels"]) == len(ROWS[-1].panels) >= 9
    exprs = " ".join(t["expr"] for p in row["panels"] for t in p["targets"])
    for name in (
        "pool_tenant_connection_usage",
        "pool_tenant_connection_limit",
        "pool_tenant_borrows_total",
        "pool_tenant_errors_total",
        "pool_connection_burst",
        "pool_route_info",
    ):
        assert name in exprs, name
    variables = {v["name"]: v for v in DOCUMENT["templating"]["list"]}
    tenant = variables["tenant"]
    assert tenant["type"] == "query" and tenant["includeAll"] is True
    assert tenant["query"].startswith("label_values(pool_tenant_connection_usage{")
    assert tenant["query"].endswith(", pool_tenant)")


def test_panels_are_laid_out_without_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in DOCUMENT["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))


def test_every_spec_is_in_the_json() -> None:
    assert [p.title for p in all_panels()] == [p["title"] for p in iter_panels(DOCUMENT)]


def test_catalog_names() -> None:
    exported = exported_metric_names()
    assert "pool_connection_wait_time_seconds_bucket" in exported
    assert "pool_connection_usage" in exported
    counters = counter_names()
    assert "pool_connection_timeouts_total" in counters
    assert "pool_connection_create_time_seconds_count" in counters
    assert "pool_connection_usage" not in counters  # a gauge, despite its suffix
    # Spec 1.1's optional metrics are exported names too (counters among them).
    assert {"pool_route_info", "pool_tenant_connection_limit"} <= exported
    assert "pool_tenant_errors_total" in counters


def _first_panel(doc: dict[str, Any], kind: str = "timeseries") -> dict[str, Any]:
    return next(p for p in doc["panels"] if p["type"] == kind)


def _drop_unit(doc: dict[str, Any]) -> None:
    del _first_panel(doc)["fieldConfig"]["defaults"]["unit"]


def _drop_act_when(doc: dict[str, Any]) -> None:
    _first_panel(doc)["description"] = "Connections."


def _fixed_datasource(doc: dict[str, Any]) -> None:
    _first_panel(doc)["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}


def _fixed_target_datasource(doc: dict[str, Any]) -> None:
    _first_panel(doc)["targets"][0]["datasource"] = {"type": "prometheus", "uid": "abc"}


def _second_datasource_variable(doc: dict[str, Any]) -> None:
    variables = doc["templating"]["list"]
    variables.append({**variables[0], "name": "datasource2"})


def _fixed_rate_window(doc: dict[str, Any]) -> None:
    target = _first_panel(doc)["targets"][0]
    target["expr"] = "sum(rate(pool_connection_timeouts_total[5m]))"


def _bare_counter(doc: dict[str, Any]) -> None:
    _first_panel(doc)["targets"][0]["expr"] = "sum(pool_connection_errors_total)"


def _bare_histogram_count(doc: dict[str, Any]) -> None:
    _first_panel(doc)["targets"][0]["expr"] = "pool_connection_wait_time_seconds_count"


def _unknown_metric(doc: dict[str, Any]) -> None:
    _first_panel(doc)["targets"][0]["expr"] = "hikaricp_connections_active"


def _missing_pool_variable(doc: dict[str, Any]) -> None:
    doc["templating"]["list"] = [v for v in doc["templating"]["list"] if v["name"] != "pool"]


def _no_marker(doc: dict[str, Any]) -> None:
    del doc["__generated__"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_drop_unit, "no unit"),
        (_drop_act_when, "Act when"),
        (_fixed_datasource, "panel datasource is not ${datasource}"),
        (_fixed_target_datasource, "datasource is not templated"),
        (_second_datasource_variable, "exactly one datasource variable"),
        (_fixed_rate_window, "instead of [$__rate_interval]"),
        (_bare_counter, "counter pool_connection_errors_total used outside"),
        (_bare_histogram_count, "counter pool_connection_wait_time_seconds_count used outside"),
        (_unknown_metric, "hikaricp_connections_active is not a metric poolmon exports"),
        (_missing_pool_variable, "missing variable 'pool'"),
        (_no_marker, "__generated__"),
    ],
)
def test_lint_catches(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    document = copy.deepcopy(DOCUMENT)
    mutate(document)
    problems = lint_dashboard(document)
    assert any(expected in p for p in problems), problems
