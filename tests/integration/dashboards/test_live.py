"""The dashboard and the alert rules against a real Prometheus scraping a real workload.

One Prometheus (module fixture) scrapes poolmon's /metrics every second while
:class:`~tests.integration.dashboards.workload.Workload` drives a stressed, a failing and a calm
pool. It loads a copy of ``dashboards/rules/*.yml`` in which every ``for:`` is shortened to 1s —
the only change; expressions, labels and annotations are the committed ones — so the alerts can
fire within the test.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from poolmon.core.registry import PoolRegistry
from poolmon.dashboards.lint import iter_queries
from poolmon.dashboards.promql import scan, substitute
from tests.conftest import require
from tests.integration.dashboards.workload import (
    CALM,
    FLAKY,
    ROUTING,
    SHARED,
    STRESSED,
    Workload,
)
from tests.support.pgbouncer import PgBouncer, pgbouncer_binary
from tests.support.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "dashboards" / "rules"
DASHBOARD = REPO / "dashboards" / "poolmon-pools.json"
RUNBOOKS = REPO / "dashboards" / "runbooks.md"

#: Template variables as Grafana would expand them with "All" selected. The rate window covers
#: the whole (short) run so every rate sees all of the workload's events.
VARIABLES = {
    "instance": ".*",
    "system": ".*",
    "pool": ".*",
    "tenant": ".*",
    "resource": "connection|",  # the resource variable's default (connection pools)
    "backend_limit": "100",
    "__rate_interval": "5m",
}
#: Alerts the stressed pool must raise (the acceptance criterion of the issue).
STRESS_ALERTS = {"PoolNearSaturation", "PoolExhausted", "PoolAcquireTimeouts"}


def shortened_rules(directory: Path) -> list[Path]:
    """Copies of the rule files with every ``for:`` set to 1s (documented above)."""
    copies = []
    for source in sorted(RULES.glob("*.yml")):
        text, count = re.subn(r"(?m)^(\s+for:\s*)\S+", r"\g<1>1s", source.read_text())
        if source.name == "poolmon.rules.yml":
            assert count == text.count("- alert:"), "every alert should have a for: duration"
        copy = directory / source.name
        copy.write_text(text)
        copies.append(copy)
    return copies


class Live:
    def __init__(self, prom: PrometheusServer, metrics_url: str) -> None:
        self.prom = prom
        self.metrics_url = metrics_url

    def exposition_names(self) -> set[str]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        return {s.name for f in text_string_to_metric_families(text) for s in f.samples}

    def rules(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.prom.url}/api/v1/rules", timeout=10) as resp:
            groups = json.loads(resp.read())["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]


def _firing(prom: PrometheusServer, pool: str) -> set[str]:
    return {
        a["labels"]["alertname"]
        for a in prom.alerts()
        if a["state"] == "firing" and a["labels"].get("pool_name") == pool
    }


@pytest.fixture(scope="module")
def live(prometheus_bin: str, pg_dsn: str, redis_url: str) -> Iterator[Live]:
    from prometheus_client import CollectorRegistry

    from poolmon.backends import PgBouncerReader, Poller, PostgresReader, RedisReader, attach
    from poolmon.exporters.prometheus import register_collector, serve

    require(pgbouncer_binary() is not None, "pgbouncer (Debian package pgbouncer)")
    registry = PoolRegistry()  # injected: colleagues' pools in the default registry stay out
    with (
        tempfile.TemporaryDirectory(prefix="poolmon-dash-") as tmp,
        PgBouncer(pg_dsn) as bouncer,
        psycopg.connect(bouncer.client_dsn()) as proxy_client,
    ):
        # The backend-capacity row's series: a real PgBouncer pool (one client), PostgreSQL and
        # Redis, polled every second on the same endpoint as the workload's pools.
        proxy_client.execute("SELECT 1")
        poller = Poller(
            [PgBouncerReader(bouncer.admin_dsn), PostgresReader(pg_dsn), RedisReader(redis_url)],
            interval=1.0,
        ).start()
        prom_registry = CollectorRegistry(auto_describe=False)
        attach(poller, register_collector(prom_registry, registry=registry))
        workload = Workload(registry, Path(tmp))
        server = serve(0, registry=registry, prometheus_registry=prom_registry)
        try:
            target = f"127.0.0.1:{server.port}"
            with PrometheusServer(
                prometheus_bin, [target], interval=1.0, rule_files=shortened_rules(Path(tmp))
            ) as prom:
                # Scraped before the workload starts, so every event lands inside a rate window.
                prom.wait_for_scrape()
                prom.wait_until(f'pool_info{{pool_name="{STRESSED}"}}')
                workload.start()
                # Poll the real alert state until the stressed pool's alerts fire.
                prom.wait_until(
                    "ALERTS",
                    lambda _: _firing(prom, STRESSED) >= STRESS_ALERTS,
                    timeout=120,
                )
                yield Live(prom, server.url)
        finally:
            workload.stop()
            server.close()
            poller.close()


def test_rules_loaded_with_severity_summary_description_and_runbook(live: Live) -> None:
    runbook_anchors = {
        "#" + m.group(1).lower() for m in re.finditer(r"(?m)^## (\w+)\s*$", RUNBOOKS.read_text())
    }
    alerts = [r for r in live.rules() if r["type"] == "alerting"]
    assert {a["name"] for a in alerts} >= STRESS_ALERTS | {
        "PoolSlowAcquire",
        "PoolConnectionLeakSuspected",
        "PoolConnectionChurn",
        "PoolConnectErrors",
        "PoolFleetOverCommit",
        "PoolTenantAtQuota",
        "PoolShedding",
        "PoolReplicaUnhealthy",
        "PoolReadFailover",
        "PoolmonMetricsAbsent",
    }
    assert all(r["health"] == "ok" for r in live.rules()), live.rules()
    for alert in alerts:
        assert alert["labels"].get("severity") in {"warning", "critical"}, alert["name"]
        annotations = alert["annotations"]
        assert annotations.get("summary") and annotations.get("description"), alert["name"]
        anchor = annotations["runbook_url"].rpartition("dashboards/runbooks.md")[2]
        assert anchor == "#" + alert["name"].lower(), alert["name"]
        assert anchor in runbook_anchors, f"no runbook section for {alert['name']}"


def test_stressed_pool_fires_saturation_exhausted_and_timeout_alerts(live: Live) -> None:
    firing = {
        a["labels"]["alertname"]: a
        for a in live.prom.alerts()
        if a["state"] == "firing" and a["labels"].get("pool_name") == STRESSED
    }
    assert set(firing) >= STRESS_ALERTS
    assert firing["PoolExhausted"]["labels"]["severity"] == "critical"
    assert firing["PoolNearSaturation"]["annotations"]["summary"].startswith(
        f"Pool {STRESSED} on 127.0.0.1:"
    )
    # The failing pool's connect errors are seen too.
    live.prom.wait_until("ALERTS", lambda _: "PoolConnectErrors" in _firing(live.prom, FLAKY))


def test_tenant_shed_and_routing_alerts_fire_for_their_pools(live: Live) -> None:
    """Spec 1.1 section 14: the shared pool's quota refusals and sheds, the routing pool's
    refused replica and the primary's failovers each raise their alert, on the right series."""

    def firing(_: object) -> list[dict[str, Any]]:
        return [a for a in live.prom.alerts() if a["state"] == "firing"]

    def raised(alerts: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        # (alert, pool, tenant or routing group: the label that says which part of the pool)
        return {
            (
                a["labels"]["alertname"],
                a["labels"].get("pool_name", ""),
                a["labels"].get("pool_tenant") or a["labels"].get("pool_route_group", ""),
            )
            for a in alerts
        }

    expected = {
        ("PoolTenantAtQuota", SHARED, "acme"),
        ("PoolShedding", SHARED, ""),
        ("PoolReplicaUnhealthy", f"{ROUTING}/replica-1", ROUTING),
        ("PoolReadFailover", f"{ROUTING}/primary", ""),
    }
    live.prom.wait_until("ALERTS", lambda r: raised(firing(r)) >= expected)
    alerts = raised(firing(None))
    # Only acme is refused at its quota; the shed caller is hooli's, not a quota refusal.
    assert {t for name, _, t in alerts if name == "PoolTenantAtQuota"} == {"acme"}
    # The primary is in service: only the replica is reported unhealthy.
    assert {p for name, p, _ in alerts if name == "PoolReplicaUnhealthy"} == {
        f"{ROUTING}/replica-1"
    }


def test_calm_pool_raises_no_alert(live: Live) -> None:
    # The rules have been evaluated many times by now (the stressed alerts went through pending).
    calm = [a for a in live.prom.alerts() if a["labels"].get("pool_name") == CALM]
    assert calm == []
    assert live.prom.query(f'pool_connection_usage{{pool_name="{CALM}"}}'), "calm pool not scraped"


def test_panel_queries_name_only_exported_metrics(live: Live) -> None:
    exported = live.exposition_names()
    document = json.loads(DASHBOARD.read_text())
    used = set().union(*(scan(expr).metric_names for _, expr in iter_queries(document)))
    assert used - {"ALERTS"} <= exported, sorted(used - {"ALERTS"} - exported)
    # The rules too: raw metrics must be exported, the rest are their own recordings.
    recorded = {r["name"] for r in live.rules() if r["type"] == "recording"}
    in_rules = set().union(*(scan(r["query"]).metric_names for r in live.rules()))
    assert in_rules - recorded <= exported, sorted(in_rules - recorded - exported)


def _has_number(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)


def test_every_panel_query_returns_data(live: Live) -> None:
    document = json.loads(DASHBOARD.read_text())
    empty = []
    for title, expr in iter_queries(document):
        promql = substitute(expr, VARIABLES)
        assert "$" not in promql, f"unsubstituted variable in {title!r}: {promql}"
        if not _has_number(live.prom.query(promql)):
            empty.append(f"{title}: {promql}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_variable_queries_return_values(live: Live) -> None:
    document = json.loads(DASHBOARD.read_text())
    for variable in document["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
        assert match, query
        selector, label = substitute(match.group(1), VARIABLES), match.group(2)
        values = {s["metric"].get(label) for s in live.prom.query(selector)}
        assert values - {None}, f"variable {variable['name']}: no {label} values from {selector}"


def test_stream_panels_have_data_only_for_the_multiplexed_pool(live: Live) -> None:
    from tests.integration.dashboards.workload import H2_HELD

    for metric, value in (("pool_stream_usage", H2_HELD), ("pool_stream_capacity", 100)):
        result = live.prom.query(metric)
        pools = {s["metric"]["pool_name"] for s in result}
        assert len(pools) == 1 and next(iter(pools)).startswith("https://127.0.0.1:"), pools
        assert {float(s["value"][1]) for s in result} == {value}
    # The database pools have no stream series at all: their stream panels stay empty.
    assert not live.prom.query(f'pool_stream_usage{{pool_name=~"{STRESSED}|{CALM}|{FLAKY}"}}')
