"""A pool written only against poolmon.api reaches /metrics and OTLP exactly as a shimmed pool does.

Both pools live in one registry: the worked example's TinyPool (poolmon.api) and a real redis-py
pool (the redis shim, a real Redis). After the same number of borrow/return cycles each, the
/metrics page served over HTTP (checked by promtool) and the OTLP request decoded by a real
receiver carry the same metric families with the same attribute keys for both, with exact counts.
"""

from __future__ import annotations

import subprocess
import urllib.request
from collections import defaultdict

import pytest

from poolmon import api
from poolmon.core import PoolRegistry
from poolmon.exporters import otel
from poolmon.exporters.prometheus import serve
from poolmon.shims import api as api_shim
from poolmon.shims import redis as redis_shim
from tests.integration.exporters.otlp_receiver import OtlpReceiver
from tests.unit.conformance.adapters import Resource, load_example

pytestmark = pytest.mark.integration

CYCLES = 7


def _series(text: str) -> dict[str, dict[str, list[tuple[frozenset[str], float]]]]:
    """pool name -> metric name -> [(label keys, value)] from an exposition."""
    out: dict[str, dict[str, list[tuple[frozenset[str], float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for line in text.splitlines():
        if not line or line.startswith("#") or "pool_name=" not in line:
            continue
        head, value = line.rsplit(" ", 1)
        metric, labels = head.split("{", 1)
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split('",') if "=" in p)
        pairs = {k: v.strip('"') for k, v in pairs.items()}
        keys = frozenset(k for k, v in pairs.items() if v)
        out[pairs["pool_name"]][metric].append((keys, float(value)))
    return out


def test_api_pool_and_redis_shim_pool_export_alike(redis_url: str) -> None:
    import redis

    reg = PoolRegistry()
    assert api_shim.instrument(registry=reg) and redis_shim.instrument(registry=reg)
    try:
        tiny = load_example().TinyPool(Resource, max_size=2, name="tiny-api")
        rpool = redis.ConnectionPool.from_url(redis_url, client_name="poolmon-i20-exporters")
        for _ in range(CYCLES):
            tiny.putconn(tiny.getconn())
            rpool.release(rpool.get_connection())
        assert api.attached() is not None
        with serve(0, registry=reg) as server:
            text = urllib.request.urlopen(server.url, timeout=5).read().decode()
        check = subprocess.run(
            ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        (redis_name,) = [s.name for s in reg.snapshot() if s.name != "tiny-api"]
        series = _series(text)
        ours, theirs = series["tiny-api"], series[redis_name]
        assert set(ours) == set(theirs)  # the same families
        for metric in ours:
            if metric == "pool_info":
                continue  # its values say what each pool is; its keys may differ (namespace)
            assert {k for k, _ in ours[metric]} == {k for k, _ in theirs[metric]}, metric
        for s in (ours, theirs):
            assert sum(v for _, v in s["pool_connection_wait_time_seconds_count"]) == CYCLES
            assert sum(v for _, v in s["pool_connection_use_time_seconds_count"]) == CYCLES
        with OtlpReceiver() as receiver:
            handle = otel.start_otlp(receiver.endpoint, interval=3600, registry=reg)
            try:
                assert handle.force_flush()
                (request,) = receiver.wait_for(1)
            finally:
                handle.shutdown()
        by_pool: dict[str, dict[str, set[frozenset[str]]]] = defaultdict(lambda: defaultdict(set))
        counts: dict[str, int] = {}
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for point in getattr(m, m.WhichOneof("data")).data_points:
                        attrs = {kv.key: kv.value.string_value for kv in point.attributes}
                        name = attrs.get("pool.name")
                        if name is None:
                            continue
                        by_pool[name][m.name].add(frozenset(attrs))
                        if m.name == "pool.connection.use_time":
                            counts[name] = point.count
        api_metrics = by_pool["tiny-api"]
        redis_metrics = by_pool[redis_name]
        assert set(api_metrics) == set(redis_metrics)
        for metric in api_metrics:
            if metric != "pool.info":
                assert api_metrics[metric] == redis_metrics[metric], metric
        assert counts == {"tiny-api": CYCLES, redis_name: CYCLES}
        tiny.close()
        rpool.disconnect()
    finally:
        redis_shim.uninstrument()
        api_shim.uninstrument()
