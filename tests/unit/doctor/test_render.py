"""The report as text (grouped by severity, through an injected console) and as JSON."""

from __future__ import annotations

import io
import json

from rich.console import Console

from poolmon.doctor import PoolWindow, diagnose_windows
from poolmon.doctor.backend import parse_limit
from poolmon.doctor.model import SCHEMA_VERSION, Report, SourceProblem
from poolmon.doctor.render import report_json, report_view
from poolmon.top.samples import PoolSample


def _report() -> Report:
    leaky = PoolSample(
        name="leaky",
        used=1,
        max=8,
        oldest_use=90.0,
        system="redis",
        server_address="r",
        server_port="6379",
    )
    big = [
        PoolWindow(
            source=f"i{i}",
            last=PoolSample(
                name="app",
                system="redis",
                server_address="r",
                server_port="6379",
                pid=str(i),
                max=600,
            ),
        )
        for i in range(2)
    ]
    return diagnose_windows(
        [PoolWindow(source="s", last=leaky), *big],
        limits=[parse_limit("r:6379=1000")],
        problems=[SourceProblem("http://down:9464/metrics", down=True, message="down: refused")],
        sources=["s", "i0", "i1", "http://down:9464/metrics"],
    )


def test_text_grouped_by_severity() -> None:
    console = Console(record=True, width=160, file=io.StringIO(), color_system=None)
    console.print(report_view(_report()))
    text = console.export_text()
    assert text.index("critical (1)") < text.index("warning (1)")
    assert text.index("[critical] overcommit") < text.index("[warning] leak")
    assert (
        "down: refused" in text and "advice:" in text and "runbook: dashboards/runbooks.md#" in text
    )


def test_json_document() -> None:
    doc = json.loads(report_json(_report()))
    assert doc["schema"] == SCHEMA_VERSION
    assert [f["kind"] for f in doc["findings"]] == ["overcommit", "leak"]
    assert (
        doc["findings"][0]["pool"] is None
        and doc["findings"][0]["evidence"]["per_pool_max"] == 266  # floor(1000 x 0.8 / 3 pools)
    )
    assert doc["limits"] == [
        {"system": "", "backend": "r:6379", "limit": 1000, "origin": "--limit"}
    ]
    assert doc["problems"][0]["down"] is True
    assert set(doc["findings"][1]) == {
        "kind",
        "severity",
        "pool",
        "source",
        "backend",
        "summary",
        "evidence",
        "window",
        "advice",
        "runbook",
    }
