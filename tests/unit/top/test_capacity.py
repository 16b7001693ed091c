"""The capacity chain line: app pools -> PgBouncer -> the backend's count against its limit."""

from __future__ import annotations

from poolmon.top.capacity import BackendSample, ProxyLink, capacity_lines, from_triples
from poolmon.top.model import TopModel
from poolmon.top.samples import PoolSample, SourceResult


def _app(source: str, pid: str, used: float, *, max_: float | None = 20.0) -> PoolSample:
    return PoolSample(
        name="orders-db", system="postgresql", server_address="10.0.0.5", server_port="6432",
        pid=pid, used=used, idle=1.0, max=max_,
    )  # fmt: skip


def _proxy(used: float, idle: float) -> PoolSample:
    return PoolSample(
        name="pgbouncer://10.0.0.5:6432/orders?user=app", system="pgbouncer",
        server_address="10.0.0.5", server_port="6432", used=used, idle=idle, max=20.0,
    )  # fmt: skip


def _frame(backend: BackendSample | None, *, max_: float | None = 20.0):  # type: ignore[no-untyped-def]
    results = [
        SourceResult(
            f"http://app{i}:9464/metrics",
            ok=True,
            taken_at=1.0,
            pools=(_app(f"app{i}", str(i), 5, max_=max_),),
        )
        for i in range(3)
    ]
    results.append(
        SourceResult(
            "http://bouncer:9464/metrics", ok=True, taken_at=1.0, pools=(_proxy(12, 8),),
            backends=() if backend is None else (backend,),
            proxy_links=(ProxyLink("pgbouncer://10.0.0.5:6432/orders?user=app",
                                   "postgresql://10.0.0.9:5432"),),
        )
    )  # fmt: skip
    return TopModel().update(results)


def test_the_issue_example_line() -> None:
    frame = _frame(
        BackendSample(
            "postgresql://10.0.0.9:5432", "postgresql", up=True, used=23, limit=100, reserved=3
        )
    )
    assert [c.text for c in frame.capacity] == [
        "orders-db: 3 instances x 20 max = 60 -> pgbouncer 20 server conns -> postgres 23/100"
    ]
    line = frame.capacity[0]
    assert (line.app_used, line.backend, line.proxy) == (15, "postgresql://10.0.0.9:5432",
                                                         "pgbouncer://10.0.0.5:6432")  # fmt: skip
    assert frame.to_dict()["capacity"][0]["text"] == line.text


def test_a_down_or_unpolled_backend_and_unbounded_pools() -> None:
    down = _frame(BackendSample("postgresql://10.0.0.9:5432", "postgresql", up=False))
    assert down.capacity[0].text.endswith("-> postgres down")
    unpolled = _frame(None, max_=None)
    assert unpolled.capacity[0].text == (
        "orders-db: 3 instances, no max -> pgbouncer 20 server conns -> "
        "postgresql://10.0.0.9:5432 (not polled)"
    )


def test_direct_backend_without_a_proxy_and_mixed_sizes() -> None:
    rows = TopModel().update(
        [SourceResult("a", ok=True, taken_at=1.0, pools=(
            PoolSample(name="cache", system="redis", server_address="r", server_port="6379",
                       pid="1", used=2, max=10),
            PoolSample(name="cache", system="redis", server_address="r", server_port="6379",
                       pid="2", used=3, max=5),
        ))]
    ).rows  # fmt: skip
    lines = capacity_lines(
        rows, [BackendSample("redis://r:6379", "redis", up=True, used=7, limit=10000)], []
    )
    assert [c.text for c in lines] == ["cache: 2 instances, 15 max -> redis 7/10000"]


def test_from_triples_sums_usage_and_keeps_limits() -> None:
    h = "postgresql://h:5432"
    backends, links = from_triples([
        ("backend_up", {"backend_name": h, "backend_system": "postgresql"}, 1),
        ("backend_connection_usage", {"backend_name": h, "backend_client": "a"}, 2),
        ("backend_connection_usage", {"backend_name": h, "backend_client": "b"}, 3),
        ("backend_connection_limit", {"backend_name": "postgresql://h:5432"}, 100),
        ("backend_connection_reserved", {"backend_name": "postgresql://h:5432"}, 3),
        ("pool_proxy_info", {"pool_name": "p", "backend_name": "postgresql://h:5432"}, 1),
    ])  # fmt: skip
    assert backends == (
        BackendSample("postgresql://h:5432", "postgresql", up=True, used=5, limit=100, reserved=3),
    )
    assert links == (ProxyLink("p", "postgresql://h:5432"),)
    assert [c.text for c in capacity_lines([], backends, links)] == [
        "postgresql://h:5432: 5/100 connections"
    ]
    down = BackendSample("redis://r:6379", "redis", up=False)
    assert [c.text for c in capacity_lines([], [down], [])] == ["redis://r:6379: down"]
