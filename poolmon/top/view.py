"""Rich renderables for ``poolmon top``. Pure: a frame and a view state in, renderables out.

Nothing here reads a terminal or a clock, so tests render through
``Console(record=True, width=...)`` and compare plain text. Threshold levels are shown twice:
as colour, and as a text marker (``!`` warn, ``!!`` crit) that survives copy-paste, ``--once``
into a file and colour-blind eyes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from poolmon.core.catalog import RESOURCES, ResourceKind
from poolmon.doctor.model import Borrow, Finding
from poolmon.doctor.render import finding_lines, findings_marker
from poolmon.doctor.rules import borrow_site
from poolmon.top.model import Frame, PoolRow, Thresholds, level
from poolmon.top.samples import LIFETIME_BOUNDS, WAIT_BOUNDS
from poolmon.top.state import ViewState

#: Findings by ``(source, pool)`` (``frame.extra["findings"]``, from poolmon.top.findings).
FindingsMap = Mapping[tuple[str, str], Sequence[Finding]]

__all__ = [
    "BAR_WIDTH",
    "SPARK_WIDTH",
    "backend_table",
    "borrows_view",
    "bucket_chart",
    "conn_bar",
    "detail_view",
    "fmt_count",
    "fmt_duration",
    "fmt_rate",
    "header",
    "help_view",
    "nouns",
    "pool_table",
    "screen",
    "sparkline",
    "status_lines",
    "used_chart",
]

BAR_WIDTH: Final = 10
SPARK_WIDTH: Final = 12
_SPARKS: Final = "▁▂▃▄▅▆▇█"
_LEVEL_STYLE: Final = ("green", "yellow", "bold red")
_MARK: Final = ("", "!", "!!")
#: Lines the table needs besides its rows (header, status, table header and borders, totals).
_CHROME_LINES: Final = 6


def fmt_duration(seconds: float | None) -> str:
    """``-``, ``850us``, ``12.3ms``, ``250ms``, ``1.25s``, ``3m05s``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 0.1:
        return f"{seconds * 1e3:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:.0f}"


def fmt_count(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value):
        return str(int(value))
    return f"{value:.1f}"


def _marked(text: str, lvl: int) -> Text:
    return Text(text + _MARK[lvl], style=_LEVEL_STYLE[lvl] if lvl else "")


def conn_bar(
    used: float, idle: float, maximum: float | None, thresholds: Thresholds | None = None
) -> Text:
    """``█`` used, ``▒`` idle, ``·`` free capacity, then ``used/idle/max``.

    Cells are rounded up so a single connection is always visible; a pool without a maximum is
    drawn against what it holds.
    """
    th = thresholds or Thresholds()
    capacity = maximum if maximum else max(used + idle, 1.0)
    scale = BAR_WIDTH / capacity
    used_cells = min(BAR_WIDTH, math.ceil(used * scale)) if used > 0 else 0
    idle_cells = min(BAR_WIDTH - used_cells, math.ceil(idle * scale)) if idle > 0 else 0
    free_cells = BAR_WIDTH - used_cells - idle_cells
    lvl = level(used / maximum if maximum else None, th.saturation_warn, th.saturation_crit)
    bar = Text()
    bar.append("█" * used_cells, style=_LEVEL_STYLE[lvl])
    bar.append("▒" * idle_cells, style="cyan")
    bar.append("·" * free_cells, style="dim")
    bar.append(f" {fmt_count(used)}/{fmt_count(idle)}/{fmt_count(maximum)}")
    return bar


def sparkline(
    history: Sequence[float | None], width: int = SPARK_WIDTH, thresholds: Thresholds | None = None
) -> Text:
    """The last ``width`` saturation values (0..1) as block characters; gaps as spaces."""
    th = thresholds or Thresholds()
    out = Text()
    recent = list(history)[-width:]
    out.append(" " * (width - len(recent)))
    for value in recent:
        if value is None:
            out.append(" ")
            continue
        clipped = min(max(value, 0.0), 1.0)
        char = _SPARKS[min(len(_SPARKS) - 1, int(clipped * (len(_SPARKS) - 1) + 0.5))]
        out.append(char, style=_LEVEL_STYLE[level(value, th.saturation_warn, th.saturation_crit)])
    return out


def _evictions(row: PoolRow) -> str:
    rate = row.eviction_rate
    if rate is None:
        return "-"
    if not row.evictions_per_s:
        return "0"
    ranked = sorted(row.evictions_per_s.items(), key=lambda kv: -kv[1])
    more = f",+{len(ranked) - 1}" if len(ranked) > 1 else ""
    return f"{fmt_rate(rate)} {ranked[0][0]}{more}"


def nouns(resource: str) -> ResourceKind:
    """The catalog's words for what a pool lends (spec 1.1): unknown kinds read as ``generic``."""
    return RESOURCES.get(resource) or RESOURCES["generic"]


def _bar_title(rows: Sequence[PoolRow]) -> tuple[str, bool]:
    """The resource column's title, and whether each row must name its resource (mixed kinds)."""
    kinds = {nouns(row.resource).resource_noun for row in rows} or {"connections"}
    if len(kinds) > 1:
        return "RESOURCES used/idle/max", True
    (noun,) = kinds
    return f"{'CONNS' if noun == 'connections' else noun.upper()} used/idle/max", False


#: The pool table's columns: title, right-justified?, widest cell allowed (None: no limit). The
#: resource column's title follows the rows' ``pool.resource`` (:func:`_bar_title`).
_BAR: Final = 3
_COLUMNS: Final = (
    ("SOURCE", False, 32),
    ("POOL", False, 40),
    ("SYS", False, 10),
    ("CONNS used/idle/max", False, None),
    ("PEND", True, None),
    ("WAIT p50/p95/p99", False, None),
    ("CREATE/s", True, None),
    ("EVICT/s", False, 24),
    ("ERR", True, None),
    ("TMO", True, None),
    ("OLDEST", True, None),
    ("SAT", True, None),
    ("TREND", False, None),
    ("FIND", False, None),
)


def streams_text(row: PoolRow) -> str:
    """``3 conns, 41/300 streams`` for a multiplexed pool (spec 1.1); ``""`` otherwise."""
    if row.streams_max is None:
        return ""
    conns = fmt_count(row.used + row.idle)
    return f"{conns} conns, {fmt_count(row.streams or 0.0)}/{fmt_count(row.streams_max)} streams"


def _conns_cell(row: PoolRow, th: Thresholds, *, named: bool) -> Text:
    cell = conn_bar(row.used, row.idle, row.max, th)
    if named:
        cell.append(f" {nouns(row.resource).resource_noun}")
    streams = streams_text(row)
    if streams:
        cell.append(f" ({streams})", style="cyan")
    return cell


def _cells(
    row: PoolRow, th: Thresholds, findings: Sequence[Finding] = (), *, named: bool = False
) -> list[Text]:
    sat_lvl = level(row.saturation, th.saturation_warn, th.saturation_crit)
    wait_lvl = level(row.wait_p95, th.wait_p95_warn, th.wait_p95_crit)
    wait = Text(f"{fmt_duration(row.wait_p50)}/")
    wait.append_text(_marked(fmt_duration(row.wait_p95), wait_lvl))
    wait.append(f"/{fmt_duration(row.wait_p99)}")
    sat = "-" if row.saturation is None else f"{row.saturation * 100:.0f}%"
    return [
        Text(row.source),
        Text(row.name),
        Text(row.system),
        _conns_cell(row, th, named=named),
        Text(fmt_count(row.pending), style="yellow" if row.pending else ""),
        wait,
        Text(fmt_rate(row.creates_per_s)),
        Text(_evictions(row)),
        Text(fmt_count(row.error_total), style="red" if row.error_total else ""),
        Text(fmt_count(row.timeouts), style="red" if row.timeouts else ""),
        Text(fmt_duration(row.oldest_use) if row.oldest_use else "-"),
        _marked(sat, sat_lvl),
        sparkline(row.history, thresholds=th),
        findings_marker(findings),
    ]


def pool_table(
    rows: Sequence[PoolRow],
    *,
    thresholds: Thresholds | None = None,
    show_source: bool = False,
    selected: int | None = None,
    findings: FindingsMap | None = None,
) -> Text:
    """The main table: a header line and one line per pool, in the order given. ``FIND`` marks
    a pool's ``poolmon doctor`` findings (``!2``: two, the worst a warning; ``!!`` critical).

    Laid out by hand as one :class:`Text` rather than a rich ``Table``: a table measures every
    cell several times, which made rendering the costliest part of a refresh.
    """
    th = thresholds or Thresholds()
    first = 0 if show_source else 1
    title, named = _bar_title(rows)
    all_columns = list(_COLUMNS)
    all_columns[_BAR] = (title, *_COLUMNS[_BAR][1:])
    columns = all_columns[first:]
    found = findings or {}
    grid = [_cells(row, th, found.get(row.key, ()), named=named)[first:] for row in rows]
    widths = []
    for index, (title, _, limit) in enumerate(columns):
        widest = max([len(title)] + [c[index].cell_len for c in grid])
        widths.append(widest if limit is None else min(widest, limit))
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append_text(_line([Text(t, style="bold") for t, _, _ in columns], columns, widths))
    for index, cells in enumerate(grid):
        out.append("\n")
        line = _line(cells, columns, widths)
        if index == selected:
            line.stylize("reverse")
        out.append_text(line)
    return out


def _line(
    cells: Sequence[Text], columns: Sequence[tuple[str, bool, int | None]], widths: Sequence[int]
) -> Text:
    line = Text()
    for index, (cell, (_, right, _), width) in enumerate(zip(cells, columns, widths, strict=True)):
        if index:
            line.append(" ")
        if cell.cell_len > width:
            cell = cell.copy()
            cell.truncate(width, overflow="ellipsis")
        pad = " " * (width - cell.cell_len)
        if right:
            line.append(pad)
            line.append_text(cell)
        else:
            line.append_text(cell)
            if index < len(cells) - 1:
                line.append(pad)
    return line


def backend_table(frame: Frame) -> Table:
    """Fleet totals: every pool to one backend, across sources and instances."""
    table = Table(title="Backends (all sources)", box=None, pad_edge=False, header_style="bold")
    for name in ("SYS", "BACKEND", "POOLS", "INSTANCES", "USED", "IDLE", "MAX", "PEND", "SAT"):
        table.add_column(name, justify="left" if name in ("SYS", "BACKEND") else "right")
    for b in frame.backends:
        sat = "-" if b.saturation is None else f"{b.saturation * 100:.0f}%"
        table.add_row(
            b.system,
            b.backend,
            str(b.pools),
            str(b.instances),
            fmt_count(b.used),
            fmt_count(b.idle),
            fmt_count(b.max),
            fmt_count(b.pending),
            sat,
        )
    return table


def capacity_text(frame: Frame) -> Text:
    """One line per backend: app pools -> proxy -> the backend's count against its limit."""
    out = Text()
    for line in frame.capacity:
        if out:
            out.append("\n")
        style = "red" if line.backend_up is False else ""
        out.append(line.text, style=style)
    return out


def status_lines(frame: Frame) -> Text:
    """One line per source that is down (nothing when all are up)."""
    out = Text()
    for status in frame.sources:
        if not status.ok:
            if out:
                out.append("\n")
            out.append("DOWN ", style="bold red")
            out.append(f"{status.source}: {status.error or 'unreachable'}")
    return out


def header(frame: Frame, state: ViewState, shown: int, *, live: bool = True) -> Text:
    """The top line: counts, sources, refresh interval, sort, filter, pause."""
    up = sum(1 for s in frame.sources if s.ok)
    text = Text("poolmon top", style="bold")
    text.append(f"  {len(frame.rows)} pools")
    if shown != len(frame.rows):
        text.append(f" ({shown} shown)")
    text.append(f"  sources {up}/{len(frame.sources)} up")
    if live:
        text.append(f"  every {state.interval:g}s")
    arrow = "^" if state.reverse else "v"
    text.append(f"  sort {state.sort} {arrow}")
    if state.editing:
        text.append(f"  filter: {state.draft}_", style="bold cyan")
    elif state.filter:
        text.append(f"  filter '{state.filter}'", style="cyan")
    if state.paused:
        text.append("  PAUSED", style="bold yellow")
    if live:
        text.append("  ? help")
    return text


def _empty(frame: Frame, state: ViewState) -> Text:
    if frame.rows and state.filter:
        return Text(f"no pool matches '{state.filter}' (Esc clears the filter)", style="dim")
    if any(s.ok for s in frame.sources):
        return Text("no pools yet: the sources answered but know no pool", style="dim")
    return Text("no pools: no source answered", style="dim")


def help_view() -> Panel:
    rows = (
        ("s / S", "next / previous sort key"),
        ("r", "reverse the sort"),
        ("/", "filter by text (Enter keeps, Esc cancels)"),
        ("p, space", "pause / resume refreshing"),
        ("+ / -", "refresh faster / slower"),
        ("up/down, j/k", "select a pool"),
        ("Enter, d", "detail of the selected pool"),
        ("Esc", "back; on the table, clear the filter"),
        ("?", "this help"),
        ("q, Ctrl-C", "quit"),
    )
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, what in rows:
        table.add_row(key, what)
    legend = Text(
        "\nCONNS (WORKERS, RESOURCES: what the pools lend): █ used ▒ idle · free.\n"
        "SAT and WAIT p95 marked ! (warn) and !! (crit).\n"
        "Rates and wait quantiles cover the last few refreshes."
    )
    return Panel(Group(table, legend), title="poolmon top: keys", expand=False)


def _mapping(title: str, values: Mapping[str, float], rates: Mapping[str, float]) -> Table:
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    table.add_column("WHAT")
    table.add_column("TOTAL", justify="right")
    table.add_column("PER S", justify="right")
    for key in sorted(set(values) | set(rates)):
        table.add_row(key, fmt_count(values.get(key, 0.0)), fmt_rate(rates.get(key)))
    if not values and not rates:
        table.add_row("none", "0", "-")
    return table


def _bound(seconds: float) -> str:
    return fmt_duration(seconds) if seconds < 60 else fmt_duration(seconds).replace("m00s", "m")


def bucket_chart(
    title: str, bounds: Sequence[float], cumulative: Sequence[float], width: int = 30
) -> Text:
    """A histogram as horizontal bars, one per bucket from the first to the last non-empty one
    (``<=5ms ████ 12``); the shape of a distribution rather than one quantile."""
    out = Text(title, style="bold")
    if not cumulative or cumulative[-1] <= 0:
        out.append("\n  no observations", style="dim")
        return out
    counts = [cumulative[0], *(b - a for a, b in itertools.pairwise(cumulative))]
    labels = [f"<={_bound(b)}" for b in bounds] + [f">{_bound(bounds[-1])}"]
    used = [i for i, c in enumerate(counts) if c > 0]
    top = max(counts)
    pad = max(len(labels[i]) for i in range(used[0], used[-1] + 1))
    for i in range(used[0], used[-1] + 1):
        cells = math.ceil(counts[i] / top * width) if counts[i] > 0 else 0
        out.append(f"\n  {labels[i].rjust(pad)} ")
        out.append("█" * cells, style="cyan")
        out.append(f" {fmt_count(counts[i])}")
    return out


def used_chart(used: Sequence[float], maximum: float | None, width: int = 60) -> Text:
    """Used connections per refresh against the maximum, oldest first (``used/max`` over the
    recent window): one block per refresh, scaled to ``max``."""
    recent = list(used)[-width:]
    top = maximum if maximum else max([*recent, 1.0])
    out = Text("used/max over the recent window", style="bold")
    out.append("\n  ")
    for value in recent:
        share = min(max(value / top, 0.0), 1.0)
        out.append(_SPARKS[min(len(_SPARKS) - 1, int(share * (len(_SPARKS) - 1) + 0.5))])
    peak = max(recent) if recent else 0.0
    out.append(f"  peak {fmt_count(peak)} of {fmt_count(maximum)}")
    return out


def borrows_view(borrows: Sequence[Borrow]) -> Text:
    """Outstanding borrows, oldest first, with the borrow site when the stack was sampled."""
    out = Text("Outstanding borrows (/poolmon/snapshot.json)", style="bold")
    for b in sorted(borrows, key=lambda b: -b.age)[:10]:
        site = borrow_site(b.stack) or "stack not sampled"
        out.append(f"\n  conn {b.conn} held {fmt_duration(b.age)}  {site}")
    if not borrows:
        out.append("\n  none", style="dim")
    return out


def detail_view(
    row: PoolRow,
    thresholds: Thresholds | None = None,
    findings: Sequence[Finding] = (),
    borrows: Sequence[Borrow] | None = None,
) -> Panel:
    """Everything about one pool: facts, its findings beside the charts they rest on (wait-time
    and lifetime distributions, used/max over the window), evictions and errors."""
    th = thresholds or Thresholds()
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="bold")
    facts.add_column()
    sat = "-" if row.saturation is None else f"{row.saturation * 100:.0f}%"
    window = "recent" if row.wait_recent else "since start"
    kind = nouns(row.resource)
    oldest = "longest running task" if row.resource == "worker" else "oldest borrow"
    for key, value in (
        ("source", Text(row.source)),
        ("system", Text(row.system)),
        ("backend", Text(row.backend)),
        ("pid", Text(row.pid or "-")),
        ("resource", Text(row.resource)),
        (kind.resource_noun, conn_bar(row.used, row.idle, row.max, th)),
        ("streams", Text(streams_text(row) or "-")),
        ("saturation", _marked(sat, level(row.saturation, th.saturation_warn, th.saturation_crit))),
        (f"pending {kind.request_noun}", Text(fmt_count(row.pending))),
        (
            f"wait p50/p95/p99 ({window})",
            Text(
                f"{fmt_duration(row.wait_p50)} / {fmt_duration(row.wait_p95)} / "
                f"{fmt_duration(row.wait_p99)}"
            ),
        ),
        ("creates", Text(f"{fmt_count(row.creates)} ok, {fmt_count(row.create_errors)} failed")),
        ("creates/s", Text(fmt_rate(row.creates_per_s))),
        ("timeouts", Text(fmt_count(row.timeouts))),
        (oldest, Text(fmt_duration(row.oldest_use) if row.oldest_use else "-")),
        ("saturation trend", sparkline(row.history, width=60, thresholds=th)),
    ):
        facts.add_row(key, value)
    found = (
        Group(*(finding_lines(f) for f in findings)) if findings else Text("none", style="green")
    )
    charts = Group(
        bucket_chart(f"wait time ({window})", WAIT_BOUNDS, row.wait_hist),
        Text(""),
        bucket_chart("connection lifetime (since start)", LIFETIME_BOUNDS, row.lifetime_hist),
        Text(""),
        used_chart(row.used_history, row.max),
    )
    side = Table.grid(padding=(0, 3))
    side.add_column(ratio=1)
    side.add_column()
    side.add_row(Group(Text("Findings (poolmon doctor)", style="bold"), found), charts)
    body = Group(
        facts,
        Text(""),
        side,
        *(() if borrows is None else (Text(""), borrows_view(borrows))),
        Text(""),
        _mapping("Evictions by reason", row.evictions, row.evictions_per_s),
        Text(""),
        _mapping("Errors by type", row.errors, {}),
        Text("\nEsc back · q quit", style="dim"),
    )
    return Panel(body, title=Text(f"pool {row.name}"), expand=False)


def screen(
    frame: Frame,
    state: ViewState,
    rows: Sequence[PoolRow],
    *,
    height: int = 50,
    thresholds: Thresholds | None = None,
    show_backends: bool | None = None,
    banner: str | None = None,
) -> RenderableType:
    """The whole screen for the live view: ``rows`` are already sorted and filtered.

    Only the rows that fit in ``height`` are rendered (a window that keeps the selection in
    view): rendering 1,000 rows nobody can see would cost most of a refresh.
    """
    parts: list[RenderableType] = [header(frame, state, len(rows))]
    if banner:
        parts.append(Text(banner, style="bold magenta"))
    status = status_lines(frame)
    if status:
        parts.append(status)
    if state.screen == "help":
        parts.append(help_view())
        return Group(*parts)
    found: FindingsMap = frame.extra.get("findings") or {}
    if state.screen == "detail" and rows:
        row = rows[min(state.selected, len(rows) - 1)]
        held = frame.extra.get("borrows") or {}
        parts.append(detail_view(row, thresholds, found.get(row.key, ()), held.get(row.key)))
        return Group(*parts)
    if not rows:
        parts.append(_empty(frame, state))
        return Group(*parts)
    backends = show_backends if show_backends is not None else len(frame.sources) > 1
    reserved = _CHROME_LINES + len(status.plain.splitlines()) + (1 if banner else 0)
    if backends:
        reserved += len(frame.backends) + 3
    reserved += len(frame.capacity)
    room = max(3, height - reserved)
    selected = min(state.selected, len(rows) - 1)
    start = min(max(0, selected - room // 2), max(0, len(rows) - room))
    window = rows[start : start + room]
    parts.append(
        pool_table(
            window,
            thresholds=thresholds,
            show_source=len(frame.sources) > 1,
            selected=selected - start,
            findings=found,
        )
    )
    if len(rows) > room:
        parts.append(Text(f"rows {start + 1}-{start + len(window)} of {len(rows)}", style="dim"))
    if backends:
        parts.append(backend_table(frame))
    if frame.capacity:
        parts.append(capacity_text(frame))
    return Group(*parts)
