"""Multiplexed connections (spec 1.1, section 15): the ledger, the checker and the exporters."""

from __future__ import annotations

import json
import threading

import pytest

from poolmon.conformance import validate_stream
from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.model import build_families


def _ledger(clock: ManualClock | None = None) -> tuple[PoolLedger, list[str]]:
    ident = PoolIdentity(
        name="https://h2.test:443", system="http", server_address="h2.test", server_port=443
    )
    ledger = PoolLedger(ident, max_size=4, clock=clock or ManualClock())
    lines: list[str] = []
    ledger.subscribe(lambda e: lines.append(json.dumps(e.to_dict())))
    return ledger, lines


def test_streams_are_counted_per_connection_and_used_counts_connections() -> None:
    clock = ManualClock()
    ledger, lines = _ledger(clock)
    conn = ledger.create(clock.monotonic(), max_streams=3)
    starts = [ledger.borrow_stream(conn) for _ in range(3)]
    snap = ledger.snapshot()
    assert (snap.used, snap.idle, snap.streams_used, snap.streams_max) == (1, 0, 3, 3)
    assert ledger.streams_of(conn) == (3, 3)
    clock.advance(0.25)
    for start in starts:
        ledger.release_stream(conn, start)
    snap = ledger.snapshot()
    assert (snap.used, snap.idle, snap.streams_used, snap.streams_max) == (0, 1, 0, 3)
    assert snap.borrows == 3 and snap.returns == 3
    assert snap.use_time.sum == pytest.approx(0.75)  # per stream: three times 0.25 s
    ledger.set_max_streams(conn, 100)
    assert ledger.snapshot().streams_max == 100
    ledger.evict(conn, "idle_timeout")
    snap = ledger.snapshot()
    assert (snap.streams_used, snap.streams_max, snap.idle) == (0, 0, 0)
    assert validate_stream(lines) == []
    borrows = [json.loads(x) for x in lines if '"borrow"' in x]
    assert [b["streams"] for b in borrows] == [1, 2, 3]
    assert {b["max_streams"] for b in borrows} == {3}


def test_a_pool_without_multiplexed_connections_reports_no_stream_capacity() -> None:
    ledger, lines = _ledger()
    conn = ledger.create(ledger.now())
    ledger.borrow(conn)
    ledger.release(conn)
    snap = ledger.snapshot()
    assert snap.streams_max is None and snap.streams_used == 0
    fams = {f.spec.name: f.points for f in build_families([snap], {})}
    assert fams["pool.stream.usage"] == {} and fams["pool.stream.capacity"] == {}
    assert all("streams" not in x for x in lines)


def test_the_lane_stays_open_for_plain_connections_beside_multiplexed_ones() -> None:
    ident = PoolIdentity(name="https://mixed.test:443", system="http")
    ledger = PoolLedger(ident)  # no subscriber: the lane is open
    plain = ledger.create(ledger.now())
    mux = ledger.create(ledger.now(), max_streams=2)
    start = ledger.borrow_stream(mux)
    ledger.borrow(plain)
    assert ledger.lane.open
    assert plain in ledger.lane.borrowed and mux in ledger.lane.borrowed
    ledger.release(plain)
    ledger.release_stream(mux, start)
    snap = ledger.snapshot()
    assert (snap.used, snap.idle, snap.borrows, snap.returns) == (0, 2, 2, 2)


def test_stream_counts_are_exact_under_threads() -> None:
    ident = PoolIdentity(name="https://threads.test:443", system="http")
    ledger = PoolLedger(ident)
    conn = ledger.create(ledger.now(), max_streams=1000)
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(500):
            ledger.release_stream(conn, ledger.borrow_stream(conn))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = ledger.snapshot()
    assert (snap.borrows, snap.returns, snap.streams_used, snap.used) == (4000, 4000, 0, 0)


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"v": "1.1", "kind": kind, "ts": 1.0, "pool": "p", **fields})


def test_checker_accepts_concurrent_borrows_up_to_the_limit_and_rejects_beyond() -> None:
    head = [_event("create", conn=1, duration=0.1, outcome="ok", max_streams=2)]
    ok = [
        *head,
        _event("borrow", conn=1, duration=0.0, streams=1, max_streams=2),
        _event("borrow", conn=1, duration=0.0, streams=2, max_streams=2),
        _event("return", conn=1, duration=0.1, streams=1),
        _event("borrow", conn=1, duration=0.0, streams=2),
    ]
    assert validate_stream(ok) == []
    over = [*ok, _event("borrow", conn=1, duration=0.0, streams=3)]
    assert [(p.line, p.rule) for p in validate_stream(over)] == [(6, "streams-over-limit")]


def test_checker_rejects_concurrent_borrows_of_a_plain_connection() -> None:
    lines = [
        _event("create", conn=1, duration=0.1, outcome="ok"),
        _event("borrow", conn=1, duration=0.0),
        _event("borrow", conn=1, duration=0.0),
        _event("borrow", conn=1, duration=0.0, streams=2),
    ]
    rules = [(p.line, p.rule) for p in validate_stream(lines)]
    assert rules == [(3, "borrow-used"), (4, "streams-undeclared"), (4, "borrow-used")]


def test_checker_late_stream_takes_the_reported_count() -> None:
    # First seen mid-life: 5 streams after this borrow means 4 before it.
    lines = [
        _event("borrow", conn=7, duration=0.0, streams=5, max_streams=5),
        _event("return", conn=7, duration=0.1, streams=4),
        _event("borrow", conn=7, duration=0.0, streams=5, max_streams=5),
        _event("borrow", conn=7, duration=0.0, streams=6, max_streams=5),
    ]
    assert [(p.line, p.rule) for p in validate_stream(lines)] == [(4, "streams-over-limit")]


def test_semconv_http_carries_the_protocol_version() -> None:
    reg = PoolRegistry(clock=ManualClock())
    ledger = reg.register(
        PoolIdentity(
            name="https://h2.test:443", system="http", server_address="h2.test", server_port=443
        )
    )
    ledger.protocol_version = "2"
    conn = ledger.create(ledger.now(), max_streams=100)
    ledger.borrow_stream(conn)
    fams = {f.spec.name: f.points for f in build_families([ledger.snapshot()], {}, semconv=True)}
    points = {dict(k).get("http.connection.state"): (dict(k), v) for k, v in fams[
        "http.client.open_connections"].items()}  # fmt: skip
    attrs, value = points["active"]
    assert value == 1.0
    assert attrs["network.protocol.version"] == "2"
    assert attrs["url.scheme"] == "https" and attrs["server.port"] == "443"
    # The stream gauges keep poolmon's names under semconv.
    assert list(fams["pool.stream.usage"].values()) == [1.0]
