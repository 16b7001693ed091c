"""``top`` shows streams for multiplexed pools (spec 1.1), from a real exposition."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console, RenderableType

from poolmon.core.clock import ManualClock
from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.top.model import TopModel, select_rows
from poolmon.top.samples import SourceResult
from poolmon.top.state import ViewState
from poolmon.top.view import detail_view, screen
from tests.unit.top.conftest import exposition, reference_samples


def _text(renderable: RenderableType, width: int = 200) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, color_system=None, file=sink)
        console.print(renderable)
    return console.export_text()


def test_multiplexed_pools_show_streams_and_http11_pools_do_not() -> None:
    reg = PoolRegistry(clock=ManualClock())
    h2 = reg.register(identity_from_url("https://h2.test:443"), max_size=3)
    for _ in range(3):
        conn = h2.create(h2.now(), max_streams=100)
    for _ in range(41):
        h2.borrow_stream(conn)
    plain = reg.register(identity_from_url("https://h1.test:443"), max_size=3)
    plain.borrow(plain.create(plain.now()))
    samples = reference_samples(exposition(reg))
    by_name = {s.name: s for s in samples}
    assert (by_name["https://h2.test:443"].streams, by_name["https://h2.test:443"].streams_max) == (
        41.0,
        300.0,
    )
    assert by_name["https://h1.test:443"].streams_max is None
    frame = TopModel().update([SourceResult("local", ok=True, taken_at=0.0, pools=samples)])
    state = ViewState()
    rows = select_rows(frame.rows, state.sort, reverse=state.reverse, text=state.filter)
    text = _text(screen(frame, state, rows, height=40))
    assert "3 conns, 41/300 streams" in text
    assert text.count("streams") == 1  # the HTTP/1.1 pool shows none
    h2_row = next(r for r in frame.rows if r.name == "https://h2.test:443")
    assert "3 conns, 41/300 streams" in _text(detail_view(h2_row))


def test_replaying_the_http2_example_gives_its_stream_counts(tmp_path: Path) -> None:
    from poolmon.top.replay import JsonlReplay

    example = Path(__file__).resolve().parents[3] / "spec/examples/valid/http2-streams.jsonl"
    lines = example.read_text().splitlines()
    # Up to the fourth stream's borrow (line 9): 4 streams on connection 1, limit raised to 100.
    partial = tmp_path / "events.jsonl"
    partial.write_text("\n".join(lines[:9]) + "\n")
    replay = JsonlReplay(partial)
    assert replay.poll() == 9 and replay.skipped == 0
    (snap,) = replay.registry.snapshot()
    assert (snap.streams_used, snap.streams_max, snap.used, snap.borrows) == (4, 100, 1, 5)
    full = JsonlReplay(example)
    full.poll()
    (snap,) = full.registry.snapshot()
    assert (snap.streams_used, snap.returns, snap.borrows, snap.closed) == (0, 6, 6, True)
