"""/poolmon/snapshot.json beside /metrics: outstanding borrows with sampled stacks, redacted;
read by ``poolmon top``'s detail view and by ``poolmon doctor``."""

from __future__ import annotations

import io
import json
import urllib.request
from dataclasses import replace
from typing import Any

from rich.console import Console

from poolmon import Pool
from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.pool import factory
from poolmon.prometheus import serve
from poolmon.top.app import TopApp
from poolmon.top.sources import MetricsUrlSource


def open_report(pool: Pool[Any]) -> Any:
    dsn = "postgresql://report:hunter2-in-stack@db.internal:5432/app"  # in the sampled stack
    return pool.getconn(), dsn


def test_snapshot_document_and_top_detail() -> None:
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    pool = Pool(
        factory(object),
        max_size=2,
        stack_sample_every=1,
        maintain=False,
        registry=registry,
        clock=clock,
        name="reports",
    )
    with pool, serve(0, registry=registry) as server:
        conn, _ = open_report(pool)
        clock.advance(45.0)
        base = server.url.rsplit("/", 1)[0]
        with urllib.request.urlopen(base + "/poolmon/snapshot.json") as resp:
            assert resp.headers["Content-Type"] == "application/json"
            raw = resp.read().decode()
        assert "hunter2-in-stack" not in raw  # redacted like every output
        doc = json.loads(raw)
        [entry] = doc["pools"]
        assert doc["schema"] == 1 and entry["name"] == "reports" and entry["used"] == 1
        [borrow] = entry["borrows"]
        assert borrow["age"] == 45.0 and "in open_report" in borrow["stack"]
        with urllib.request.urlopen(server.url) as resp:  # /metrics is still /metrics
            assert b"pool_connection_usage" in resp.read()

        app = TopApp(
            [MetricsUrlSource(server.url)],
            console=Console(record=True, width=200, file=io.StringIO(), color_system=None),
        )
        app.refresh()
        app.state = replace(app.state, screen="detail", selected=0)
        app.refresh()
        app.console.print(app.render(height=80))
        text = app.console.export_text()
        assert "Outstanding borrows" in text
        assert (
            "conn 1 held 45.00s" in text
            and "test_snapshot_json.py" in text
            and "in open_report" in text
        )
        assert "[warning] leak" in text and "borrowed at" in text
        pool.putconn(conn)
