"""top against real endpoints: /metrics URLs (one, several, down, with credentials) and a real
Prometheus server."""

from __future__ import annotations

import json
import socket

import pytest

from poolmon.cli import main
from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import serve
from poolmon.top.sources import MetricsUrlSource, PrometheusSource
from tests.support.prometheus import PrometheusServer

from .conftest import demo, fleet, wait_for

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nobody listens


def _busy_registry() -> PoolRegistry:
    registry = PoolRegistry()
    ledger = registry.register(identity_from_url("redis://:t0ken@cache:6379/0"), max_size=4)
    a, b = ledger.create(ledger.now()), ledger.create(ledger.now())
    ledger.borrow(a)
    ledger.wait()
    ledger.timeout(ledger.now())
    ledger.evict(b, "idle_timeout")
    return registry


def test_url_once_json(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(0, registry=_busy_registry()) as server:
        host_port = server.url.split("//")[1].split("/")[0]
        assert main(["top", host_port, "--once", "--json"]) == 0  # host:port is enough
    doc = json.loads(capsys.readouterr().out)
    (pool,) = doc["pools"]
    assert pool["name"] == "redis://cache:6379/0" and pool["system"] == "redis"
    assert (pool["used"], pool["idle"], pool["max"], pool["timeouts"]) == (1, 0, 4, 1)
    assert pool["evictions"] == {"idle_timeout": 1}
    assert pool["backend"] == "cache:6379"
    assert doc["sources"][0]["ok"] is True


def test_url_once_text_with_sort_filter_and_a_down_source(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = _busy_registry()
    registry.register(identity_from_url("postgresql://u:pw@pg:5432/app"), max_size=9)
    down = f"http://127.0.0.1:{_closed_port()}/metrics"
    with serve(0, registry=registry) as server:
        code = main(["top", server.url, down, "--once", "--sort", "name", "--filter", "redis"])
    out = capsys.readouterr().out
    assert code == 0
    assert "redis://cache:6379/0" in out and "postgresql://pg" not in out
    assert f"DOWN {down}" in out and "sources 1/2 up" in out
    assert "t0ken" not in out and "pw@" not in out
    assert main(["top", down, "--once"]) == 1  # nothing answered


def test_credentials_in_the_url_are_sent_but_never_shown() -> None:
    with serve(0, registry=_busy_registry()) as server:
        url = server.url.replace("http://", "http://scraper:s3cr3t@")
        source = MetricsUrlSource(url)
        (result,) = source.fetch()
    assert result.ok and [p.name for p in result.pools] == ["redis://cache:6379/0"]
    assert "s3cr3t" not in result.source and "scraper" not in result.source


def test_fleet_two_processes_with_per_backend_totals(capsys: pytest.CaptureFixture[str]) -> None:
    with fleet(2, 3) as urls:
        assert main(["top", *urls, "--once", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert main(["top", *urls, "--once"]) == 0
        text = capsys.readouterr().out
    assert len(doc["pools"]) == 2
    assert {p["source"] for p in doc["pools"]} == set(urls)
    (backend,) = doc["backends"]
    assert backend["backend"] == "db.example:5432" and backend["system"] == "postgresql"
    assert (backend["pools"], backend["instances"]) == (2, 2)
    assert (backend["used"], backend["idle"], backend["max"]) == (5, 2, 20)
    assert "Backends (all sources)" in text and "hunter2" not in text
    totals = next(
        line for line in text.splitlines() if line.split()[:2] == ["postgresql", "db.example:5432"]
    )
    assert totals.split()[2:7] == ["2", "2", "5", "2", "20"]


def test_prometheus_source(prometheus_bin: str, capsys: pytest.CaptureFixture[str]) -> None:
    with fleet(1, 4) as urls:
        targets = [u.split("//")[1].split("/")[0] for u in urls]
        with PrometheusServer(prometheus_bin, targets, interval=0.5) as prom:
            prom.wait_for_scrape()
            prom.wait_until("count(pool_info)", lambda r: bool(r) and r[0]["value"][1] == "2")
            source = PrometheusSource(prom.url)
            results = wait_for(
                lambda: [r for r in source.fetch() if r.ok and r.pools], what="pools"
            )
            assert main(["top", "--prometheus", prom.url, "--once", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
    assert {r.source for r in results} == set(targets)  # type: ignore[attr-defined]
    by_source = {p["source"]: p for p in doc["pools"]}
    assert set(by_source) == set(targets)
    assert sorted(p["used"] for p in doc["pools"]) == [1, 4]
    (backend,) = doc["backends"]
    assert (backend["instances"], backend["used"], backend["max"]) == (2, 5, 20)


def test_prometheus_down_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main(["top", "--prometheus", url, "--once"]) == 1
    assert f"DOWN {url}" in capsys.readouterr().out


def test_worker_pools_over_metrics_say_workers(capsys: pytest.CaptureFixture[str]) -> None:
    """A real instrumented ThreadPoolExecutor beside a connection pool on one /metrics page:
    ``pool_resource`` in ``pool_info`` gives each row its catalog words."""
    import concurrent.futures as cf
    import threading

    from poolmon.shims import futures

    registry = _busy_registry()
    assert futures.instrument(registry=registry)
    gate = threading.Event()
    ex = cf.ThreadPoolExecutor(2, thread_name_prefix="topw")
    try:
        running = threading.Barrier(3)
        blocked = [ex.submit(lambda: (running.wait(), gate.wait())) for _ in range(2)]
        queued = [ex.submit(pow, 2, 2) for _ in range(3)]
        running.wait()  # both workers are inside their task: the three others wait
        with serve(0, registry=registry) as server:
            assert main(["top", server.url, "--once", "--sort", "name"]) == 0
            text = capsys.readouterr().out
            assert main(["top", server.url, "--once", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
    finally:
        gate.set()
        ex.shutdown(wait=True)
        futures.uninstrument()
    assert all(f.done() for f in blocked + queued)
    header = next(line for line in text.splitlines() if "POOL" in line)
    assert "RESOURCES used/idle/max" in header
    row = next(line for line in text.splitlines() if "threads://topw" in line)
    assert "2/0/2 workers" in row
    assert "connections" in next(line for line in text.splitlines() if "redis://" in line)
    pools = {p["name"]: p for p in doc["pools"]}
    assert pools["threads://topw"]["resource"] == "worker"
    assert pools["threads://topw"]["pending"] == 3
    assert pools["redis://cache:6379/0"]["resource"] == "connection"


def test_prometheus_once_has_rates_and_recent_waits_from_promql(
    prometheus_bin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21 (5): with Prometheus holding history, the first and only frame of ``--once`` has
    creates/s, evictions/s, errors/s and wait quantiles (PromQL over the window), not nulls."""
    with demo(["--phase-seconds", "1.5"]) as (_, url):
        target = url.split("//")[1].split("/")[0]
        with PrometheusServer(prometheus_bin, [target], interval=0.5) as prom:
            prom.wait_for_scrape()
            # Let the history hold a burst (waits) and an outage (evictions, errors).
            for expr in (
                "sum(rate(pool_connection_evictions_total[1m])) > 0",
                "sum(rate(pool_connection_errors_total[1m])) > 0",
                "sum(rate(pool_connection_wait_time_seconds_bucket[1m])) > 0",
            ):
                prom.wait_until(expr, bool)
            assert main(["top", "--prometheus", prom.url, "--once", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert main(["top", "--prometheus", prom.url, "--once", "--sort", "name"]) == 0
            text = capsys.readouterr().out
    pools = doc["pools"]
    assert len(pools) == 3  # two sqlite pools and the urllib3 pool of the demo
    for pool in pools:
        assert pool["creates_per_s"] is not None and pool["creates_per_s"] >= 0, pool["name"]
        assert pool["errors_per_s"] is not None and pool["errors_per_s"] >= 0, pool["name"]
    assert any(v > 0 for p in pools for v in p["evictions_per_s"].values())
    assert any(p["errors_per_s"] > 0 for p in pools)
    waited = [p for p in pools if p["wait_p95"] is not None]
    assert waited and all(p["wait_recent"] for p in waited)
    assert all(p["wait_p50"] <= p["wait_p95"] <= p["wait_p99"] for p in waited)
    # The text table shows numbers in the CREATE/s and EVICT/s columns, not blanks.
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "CREATE/s" in line)
    start, end = lines[at].index("CREATE/s"), lines[at].index("CREATE/s") + len("CREATE/s")
    evict = lines[at].index("EVICT/s")
    rows = lines[at + 1 : at + 4]
    assert len(rows) == 3
    for line in rows:
        assert line[start:end].strip() not in ("", "-"), line
        assert line[evict : evict + 7].strip() not in ("", "-"), line
