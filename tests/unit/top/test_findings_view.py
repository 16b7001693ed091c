"""top's findings: the FIND column and the detail view's findings beside its charts."""

from __future__ import annotations

import os
from dataclasses import replace

from rich.console import Console, RenderableType

from poolmon.top.app import TopApp
from poolmon.top.findings import findings_for
from poolmon.top.model import TopModel, select_rows
from poolmon.top.samples import LIFETIME_BOUNDS, WAIT_BOUNDS, PoolSample, SourceResult
from poolmon.top.state import ViewState
from poolmon.top.view import bucket_chart, screen, used_chart


def _text(renderable: RenderableType, width: int = 200) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, color_system=None, file=sink)
        console.print(renderable)
    return console.export_text()


class _Fixed:
    """A source returning prepared results, one batch per fetch (logic test of the view)."""

    label = "s"

    def __init__(self, batches: list[list[SourceResult]]) -> None:
        self.batches = batches

    def fetch(self) -> list[SourceResult]:
        return self.batches.pop(0)


def _leaky(t: float, oldest: float) -> SourceResult:
    wait = (*(1.0 for _ in WAIT_BOUNDS), 1.0)
    life = (*(0.0 if b < 60 else 3.0 for b in LIFETIME_BOUNDS), 4.0)
    pools = (
        PoolSample(
            name="leaky",
            used=4,
            max=4,
            oldest_use=oldest,
            wait_cumulative=wait,
            lifetime_cumulative=life,
        ),
        PoolSample(name="fine", used=1, max=4, wait_cumulative=wait),
    )
    return SourceResult("s", ok=True, taken_at=t, pools=pools)


def test_find_column_and_detail_view() -> None:
    times = iter([0.0, 1.0, 6.0])
    app = TopApp(
        [_Fixed([[_leaky(0.0, 10.0)], [_leaky(1.0, 60.0)], [_leaky(6.0, 95.0)]])],
        clock=lambda: next(times),
    )
    assert app.refresh().extra["findings"] == {}  # 10 s: no leak yet
    assert app.refresh().extra["findings"] == {}  # 60 s, but findings are at most every 5 s
    frame = app.refresh()
    found = frame.extra["findings"]
    assert [f.kind for f in found[("s", "leaky")]] == ["leak"]
    assert ("s", "fine") not in found
    state = ViewState()
    rows = select_rows(frame.rows, state.sort, reverse=state.reverse, text=state.filter)
    table = _text(screen(frame, state, rows, height=40))
    header = next(line for line in table.splitlines() if "POOL" in line)
    assert header.rstrip().endswith("FIND")
    leaky = next(line for line in table.splitlines() if line.startswith("leaky"))
    assert leaky.rstrip().endswith("!!1")  # one finding, critical: the pool is full of leaks
    assert (
        not next(line for line in table.splitlines() if line.startswith("fine"))
        .rstrip()
        .endswith("1")
    )
    detail = _text(
        screen(
            frame,
            replace(
                state,
                screen="detail",
                selected=rows.index(next(r for r in rows if r.name == "leaky")),
            ),
            rows,
            height=60,
        )
    )
    assert "Findings (poolmon doctor)" in detail and "[critical] leak" in detail
    assert "wait time (recent)" in detail and "connection lifetime (since start)" in detail
    assert "<=5m" in detail  # the lifetime bucket of the three connections (60 s < age <= 300 s)
    assert "used/max over the recent window" in detail and "peak 4 of 4" in detail


def test_findings_follow_the_models_window() -> None:
    model = TopModel()
    frame = model.update([_leaky(0.0, 5.0)])
    assert findings_for(model, frame.rows) == {}  # 5 s is no leak
    frame = model.update([_leaky(2.0, 40.0)])
    assert [f.kind for f in findings_for(model, frame.rows)[("s", "leaky")]] == ["leak"]


def test_charts() -> None:
    empty = _text(bucket_chart("wait", WAIT_BOUNDS, ()))
    assert "no observations" in empty
    cumulative = (*(0.0 if b < 0.01 else (2.0 if b < 0.1 else 6.0) for b in WAIT_BOUNDS), 6.0)
    chart = _text(bucket_chart("wait", WAIT_BOUNDS, cumulative, width=10)).splitlines()
    bars = {line.split()[0]: line for line in chart[1:]}
    assert bars["<=10.0ms"].count("█") == 5 and bars["<=10.0ms"].endswith(" 2")
    assert bars["<=100ms"].count("█") == 10 and bars["<=100ms"].endswith(" 4")
    assert "<=5.0ms" not in bars  # charts start at the first non-empty bucket
    line = _text(used_chart([0, 2, 4], 4)).splitlines()[1]
    assert line.strip().startswith("▁▅█") and "peak 4 of 4" in line


def test_once_json_lists_findings() -> None:
    import io as _io
    import json

    from poolmon.top.app import print_once

    app = TopApp([_Fixed([[_leaky(0.0, 95.0)]])])
    frame = app.refresh()
    out = _io.StringIO()
    print_once(frame, ViewState(), as_json=True, out=out)
    doc = json.loads(out.getvalue())
    assert [(f["pool"], f["kind"]) for f in doc["findings"]] == [("leaky", "leak")]
