"""Rendering through a recording console: plain text at a fixed width, no ANSI golden files."""

from __future__ import annotations

import os

from rich.console import Console, RenderableType

from poolmon.top.model import Frame, Thresholds, TopModel, select_rows
from poolmon.top.samples import WAIT_BOUNDS, PoolSample, SourceResult
from poolmon.top.state import ViewState
from poolmon.top.view import conn_bar, fmt_duration, screen, sparkline


def _text(renderable: RenderableType, width: int = 160) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, color_system=None, file=sink)
        console.print(renderable)
    return console.export_text()


def _frame(*results: SourceResult) -> Frame:
    return TopModel().update(results)


def _pool(name: str, used: float, **kw: object) -> PoolSample:
    base: dict[str, object] = {"max": 10.0, "idle": 1.0, "system": "postgresql"}
    base.update(kw)
    return PoolSample(name=name, used=used, **base)  # type: ignore[arg-type]


def _render(frame: Frame, state: ViewState | None = None, width: int = 160) -> str:
    st = state or ViewState()
    rows = select_rows(frame.rows, st.sort, reverse=st.reverse, text=st.filter)
    return _text(screen(frame, st, rows, height=40), width)


def test_rows_bars_and_threshold_markers() -> None:
    frame = _frame(
        SourceResult(
            "a", ok=True, taken_at=0.0, pools=(_pool("calm", 2), _pool("warm", 7), _pool("hot", 10))
        ),
    )
    text = _render(frame)
    lines = text.splitlines()
    assert "3 pools" in lines[0] and "sort saturation" in lines[0]
    header = next(line for line in lines if "POOL" in line)
    for column in ("CONNS used/idle/max", "PEND", "WAIT p50/p95/p99", "EVICT/s", "TREND"):
        assert column in header
    hot, warm, calm = (
        next(line for line in lines if line.startswith(n)) for n in ("hot", "warm", "calm")
    )
    assert lines.index(hot) < lines.index(warm) < lines.index(calm)  # worst first
    assert "██████████ 10/1/10" in hot and "100%!!" in hot
    assert "███████▒·· 7/1/10" in warm and "70%!" in warm and "70%!!" not in warm
    assert "██▒······· 2/1/10" in calm and "20%" in calm and "!" not in calm.split("20%")[1][:1]


def test_wait_threshold_marker_and_units() -> None:
    cumulative = (*tuple(0.0 if b < 1.0 else 10.0 for b in WAIT_BOUNDS), 10.0)
    frame = _frame(
        SourceResult(
            "a", ok=True, taken_at=0.0, pools=(_pool("slow", 1, wait_cumulative=cumulative),)
        )
    )
    line = next(line for line in _render(frame).splitlines() if line.startswith("slow"))
    # Waits between 0.5 and 1 s: p50/p95/p99 interpolated in that bucket; p95 over crit.
    assert "750ms/975ms!!/995ms" in line
    assert fmt_duration(0.000123) == "123us" and fmt_duration(0.0123) == "12.3ms"
    assert fmt_duration(125) == "2m05s" and fmt_duration(None) == "-"


def test_sparkline_and_bar_edges() -> None:
    assert sparkline([0.0, 0.5, 1.0, None], width=6).plain == "  ▁▅█ "
    assert sparkline([2.0], width=1).plain == "█"  # clipped
    assert conn_bar(0, 0, None).plain == "·········· 0/0/-"
    assert conn_bar(3, 1, None).plain.startswith("████████▒▒")  # unbounded: against what it holds
    assert conn_bar(1, 0, 1000).plain.startswith("█·")  # one connection is always visible


def test_trend_column_shows_history() -> None:
    model = TopModel()
    for t, used in enumerate([0, 5, 10]):
        frame = model.update(
            [SourceResult("a", ok=True, taken_at=float(t), pools=(_pool("p", used, idle=0.0),))]
        )
    line = next(line for line in _render(frame).splitlines() if line.startswith("p "))
    assert line.rstrip().endswith("▁▅█")


def test_down_source_and_fleet_totals() -> None:
    frame = _frame(
        SourceResult(
            "host1:9464",
            ok=True,
            taken_at=0.0,
            pools=(_pool("p", 3, server_address="db", server_port="5432"),),
        ),
        SourceResult("host2:9464", ok=False, taken_at=0.0, error="connection refused"),
    )
    text = _render(frame)
    assert "DOWN host2:9464: connection refused" in text
    assert "sources 1/2 up" in text
    assert "SOURCE" in text and "host1:9464" in text
    assert "Backends (all sources)" in text
    totals = next(line for line in text.splitlines() if "db:5432" in line)
    assert totals.split()[:6] == ["postgresql", "db:5432", "1", "1", "3", "1"]


def test_empty_states() -> None:
    assert "no pools yet: the sources answered" in _render(
        _frame(SourceResult("a", ok=True, taken_at=0.0))
    )
    down = _render(_frame(SourceResult("a", ok=False, taken_at=0.0, error="refused")))
    assert "no pools: no source answered" in down and "DOWN a: refused" in down
    frame = _frame(SourceResult("a", ok=True, taken_at=0.0, pools=(_pool("p", 1),)))
    assert "no pool matches 'zzz'" in _render(frame, ViewState(filter="zzz"))


def test_header_flags_detail_and_help() -> None:
    frame = _frame(
        SourceResult(
            "a",
            ok=True,
            taken_at=0.0,
            pools=(
                _pool(
                    "p", 4, evictions={"broken": 2.0}, errors={"create_failed": 3.0}, timeouts=1.0
                ),
            ),
        )
    )
    state = ViewState(paused=True, filter="p", interval=0.5, reverse=True)
    head = _render(frame, state).splitlines()[0]
    assert (
        "PAUSED" in head
        and "filter 'p'" in head
        and "every 0.5s" in head
        and "sort saturation ^" in head
    )
    detail = _render(frame, ViewState(screen="detail"))
    assert "pool p" in detail and "broken" in detail and "create_failed" in detail
    assert "Evictions by reason" in detail and "Errors by type" in detail
    help_text = _render(frame, ViewState(screen="help"))
    for key in ("s / S", "reverse", "filter", "pause", "refresh faster", "detail", "quit"):
        assert key in help_text


def test_only_visible_rows_are_rendered() -> None:
    pools = tuple(_pool(f"pool{i:04d}", i % 10) for i in range(1000))
    frame = _frame(SourceResult("a", ok=True, taken_at=0.0, pools=pools))
    text = _render(frame)
    assert "rows 1-" in text and "of 1000" in text
    assert len(text.splitlines()) <= 40


def test_thresholds_are_configurable() -> None:
    frame = _frame(SourceResult("a", ok=True, taken_at=0.0, pools=(_pool("p", 5),)))
    rows = select_rows(frame.rows)
    text = _text(screen(frame, ViewState(), rows, thresholds=Thresholds(0.3, 0.4)))
    assert "50%!!" in text


def test_worker_pools_say_workers_and_tasks() -> None:
    """Spec 1.1 ``pool.resource``: the catalog's nouns in the table's title and the detail."""
    workers = _pool("threads://w", 2, resource="worker", pending=3.0, idle=0.0, max=2.0)
    frame = _frame(SourceResult("a", ok=True, taken_at=0.0, pools=(workers,)))
    text = _render(frame)
    header = next(line for line in text.splitlines() if "POOL" in line)
    assert "WORKERS used/idle/max" in header and "CONNS" not in header
    detail = _render(frame, ViewState(screen="detail"))
    lines = detail.splitlines()
    assert any("workers" in line and "2/0/2" in line for line in lines)
    assert any("pending tasks" in line and "3" in line for line in lines)
    assert "longest running task" in detail and "connections" not in detail
    assert "oldest borrow" not in detail and "resource" in detail


def test_mixed_resources_name_each_row_and_unknown_kinds_read_as_generic() -> None:
    rows = (
        _pool("pg", 1),
        _pool("threads://w", 2, resource="worker", max=4.0),
        _pool("custom", 1, resource="gizmo"),  # unknown to this catalog: generic words
    )
    text = _render(_frame(SourceResult("a", ok=True, taken_at=0.0, pools=rows)))
    lines = text.splitlines()
    header = next(line for line in lines if "POOL" in line)
    assert "RESOURCES used/idle/max" in header
    pg, workers, custom = (
        next(line for line in lines if line.startswith(n)) for n in ("pg", "threads://w", "custom")
    )
    assert "1/1/10 connections" in pg
    assert "2/1/4 workers" in workers
    assert "1/1/10 resources" in custom
    detail = _render(
        _frame(SourceResult("a", ok=True, taken_at=0.0, pools=rows[:1])), ViewState(screen="detail")
    )
    assert "connections" in detail and "pending requests" in detail and "oldest borrow" in detail
