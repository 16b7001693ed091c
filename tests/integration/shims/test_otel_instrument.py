"""``opentelemetry-instrument python app.py`` on an unmodified app yields poolmon's metrics.

The app (apps/otel_app.py) imports psycopg_pool and redis-py only. ``opentelemetry-instrument``
finds poolmon's instrumentors through the ``opentelemetry_instrumentor`` entry points, and
opentelemetry-distro configures the SDK from the standard OTEL_* variables; the console metrics
exporter prints what reached OpenTelemetry when the process exits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from poolmon.core.identity import identity_from_url
from tests.conftest import require

APP = Path(__file__).parent / "apps" / "otel_app.py"


def _documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporter printed (pretty-printed, one after another)."""
    decoder = json.JSONDecoder()
    docs: list[dict[str, Any]] = []
    pos = text.find("{")
    while pos != -1:
        doc, end = decoder.raw_decode(text, pos)
        docs.append(doc)
        pos = text.find("{", end)
    return docs


def _points(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        for rm in doc.get("resource_metrics", []):
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    out.setdefault(metric["name"], []).extend(metric["data"]["data_points"])
    return out


def test_opentelemetry_instrument_reports_poolmon_metrics(pg_dsn: str, redis_url: str) -> None:
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    require(launcher.exists(), "opentelemetry-instrument (poolmon[otlp])")
    require(importlib.util.find_spec("opentelemetry.distro") is not None, "opentelemetry-distro")
    prefix = f"poolmon-otel-{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "APP_PG_DSN": pg_dsn,
        "APP_REDIS_URL": redis_url,
        "APP_KEY_PREFIX": prefix,
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",  # one export, at shutdown
        "OTEL_SERVICE_NAME": "poolmon-otel-app",
    }
    proc = subprocess.run(
        [str(launcher), sys.executable, str(APP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=APP.parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert "app done" in proc.stdout
    points = _points(_documents(proc.stdout[proc.stdout.index("app done") + 8 :]))

    def by_pool(metric: str) -> dict[str, dict[str, Any]]:
        return {p["attributes"]["pool.name"]: p for p in points.get(metric, [])}

    waits = by_pool("pool.connection.wait_time")
    # Exact counts: 5 psycopg borrows; 5 SET + 5 GET through redis-py's pool.
    assert waits["otel-app-pg"]["count"] == 5
    assert waits[identity_from_url(redis_url).name]["count"] == 10
    creates = [
        p
        for p in points["pool.connection.create_time"]
        if p["attributes"]["pool.name"] == "otel-app-pg"
    ]
    assert sum(p["count"] for p in creates) >= 1
    states = {
        p["attributes"]["pool.connection.state"]: p["value"]
        for p in points["pool.connection.usage"]
        if p["attributes"]["pool.name"] == "otel-app-pg"
    }
    assert states == {"idle": 0, "used": 0}  # closed before exit: every connection evicted
    assert "pool.info" in points
