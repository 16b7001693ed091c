"""doctor over a real Prometheus that scraped a real served registry: a window between two
scrapes, the peak of used by max_over_time, a scrape target that is down shown as down."""

from __future__ import annotations

from urllib.parse import urlsplit

from poolmon import Pool
from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry
from poolmon.doctor import Thresholds, diagnose
from poolmon.doctor.inputs import from_prometheus
from poolmon.errors import PoolExhausted
from poolmon.pool import factory
from poolmon.prometheus import serve
from tests.support.prometheus import PrometheusServer, free_port


def test_window_from_prometheus(prometheus_bin: str) -> None:
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    identity = PoolIdentity("ff", system="redis", server_address="10.0.0.7", server_port=6379)
    pool = Pool(
        factory(object),
        min_size=2,
        max_size=2,
        eager=True,  # two creates before the first scrape: the start the storm rule counts
        fail_fast=True,
        maintain=False,
        registry=registry,
        clock=clock,
        identity=identity,
    )
    with pool, serve(0, registry=registry) as server:
        target = urlsplit(server.url).netloc
        dead = f"127.0.0.1:{free_port()}"
        with PrometheusServer(prometheus_bin, [target, dead], interval=0.5) as prom:
            prom.wait_until('up{job="poolmon"} == 1', lambda r: len(r) == 1)
            held = [pool.getconn(), pool.getconn()]
            refused = 0
            for _ in range(5):
                try:
                    pool.getconn()
                except PoolExhausted:
                    refused += 1
            prom.wait_until(
                'pool_connection_errors_total{error_type="exhausted"} == 5', lambda r: len(r) == 1
            )
            for conn in held:
                pool.putconn(conn)
            prom.wait_until(
                'pool_connection_usage{pool_connection_state="used"} == 0', lambda r: len(r) == 1
            )
            report = diagnose(prometheus=[prom.url], window=60.0)
            stormy = diagnose(
                prometheus=[prom.url], window=60.0, thresholds=Thresholds(storm_creates=2)
            )
            [window] = from_prometheus(prom.url, window=60.0).windows
    assert window.last.used == 0 and window.peak_used == 2  # max_over_time saw both held
    assert refused == 5
    assert report.pools == 1
    [finding] = report.findings
    assert finding.kind == "refusals" and finding.evidence["refused"] == 5
    assert "(Prometheus)" in finding.window
    assert not [p for p in report.problems if not p.down]  # every query answered
    down = [p for p in report.problems if p.down]
    assert [p.source for p in down] == [dead] and "scrape failing" in down[0].message
    storm = [f for f in stormy.findings if f.kind == "storm"]
    assert [(f.backend, f.evidence["creates"]) for f in storm] == [("10.0.0.7:6379", 2)]


def test_prometheus_unreachable_is_down() -> None:
    report = diagnose(prometheus=[f"http://127.0.0.1:{free_port()}"], window=60.0)
    assert report.pools == 0
    assert report.problems[0].down and "refused" in report.problems[0].message.lower()
