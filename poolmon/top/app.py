"""The live ``poolmon top`` loop, and the one-shot ``--once`` output.

Threads: sources are fetched on short-lived daemon threads (one per source, in parallel, so one
slow source delays nobody); the main thread owns the model, the view state and the terminal.
A finished fetch hands its results over through a queue and wakes the main thread's ``select``
through a pipe, so keys are answered at once even while a fetch is in flight. Only one fetch is
in flight at a time: a source slower than the refresh interval just lowers the refresh rate.

The terminal is restored on every exit: ``q``, Ctrl-C (``KeyboardInterrupt``), SIGTERM (turned
into an exception while the loop runs) and any other exception, because the key reader and
rich's ``Live(screen=True)`` are context managers unwound in reverse order.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from types import FrameType
from typing import Final, TextIO

from rich.console import Console, RenderableType
from rich.live import Live

from poolmon.doctor.inputs import borrows_by_pool
from poolmon.doctor.model import Borrow
from poolmon.top.findings import Findings, findings_for
from poolmon.top.keys import KeyReader
from poolmon.top.model import Frame, PoolRow, Thresholds, TopModel, select_rows
from poolmon.top.samples import SourceResult
from poolmon.top.sources import Source
from poolmon.top.state import ViewState, apply_key
from poolmon.top.view import (
    backend_table,
    capacity_text,
    header,
    pool_table,
    screen,
    status_lines,
)

#: Seconds between two computations of the findings column (they move slowly).
FINDINGS_EVERY: Final = 5.0

__all__ = ["FINDINGS_EVERY", "Terminated", "TopApp", "fetch_all", "print_once", "sigterm_raises"]


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives during the live loop."""

    def __init__(self) -> None:
        super().__init__(143)


def fetch_all(sources: Sequence[Source], timeout: float | None = None) -> list[SourceResult]:
    """Fetch every source in parallel; results in source order.

    A source still running after ``timeout`` seconds is reported down for this round (its
    daemon thread is abandoned and cannot block the process from exiting).
    """
    if len(sources) == 1:
        return list(sources[0].fetch())
    slots: list[list[SourceResult] | None] = [None] * len(sources)

    def run(index: int, source: Source) -> None:
        slots[index] = source.fetch()

    threads = [
        threading.Thread(target=run, args=(i, s), daemon=True, name=f"poolmon-top-fetch-{i}")
        for i, s in enumerate(sources)
    ]
    for thread in threads:
        thread.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    out: list[SourceResult] = []
    for index, (thread, source) in enumerate(zip(threads, sources, strict=True)):
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        result = slots[index]
        if result is None:
            out.append(
                SourceResult(source.label, ok=False, taken_at=time.monotonic(), error="timed out")
            )
        else:
            out.extend(result)
    return out


class TopApp:
    """State, model and sources of one ``top`` session. ``run()`` is the interactive loop; the
    other methods are what it is made of, callable from tests without a terminal."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        console: Console | None = None,
        state: ViewState | None = None,
        model: TopModel | None = None,
        thresholds: Thresholds | None = None,
        fetch_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        banner: Callable[[], str] | None = None,
    ) -> None:
        self.sources = list(sources)
        self.console = console if console is not None else Console()
        self.state = state if state is not None else ViewState()
        self.model = model if model is not None else TopModel()
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.fetch_timeout = fetch_timeout
        self._clock = clock
        self._banner = banner
        self.frame = Frame((), (), ())
        self._findings: Findings = {}
        self._findings_at: float | None = None

    # ------------------------------------------------------------------ pieces

    def refresh(self) -> Frame:
        """Fetch every source now (blocking) and update the model."""
        return self.apply(fetch_all(self.sources, self.fetch_timeout + 1.0))

    def apply(self, results: Sequence[SourceResult]) -> Frame:
        frame = self.model.update(results)
        self.frame = frame
        borrows = self._detail_borrows()
        now = self._clock()
        # Findings move slowly and cost ~50 ms for 1,000 pools: at most every FINDINGS_EVERY
        # seconds, and at once when the detail view brings borrows.
        if borrows or self._findings_at is None or now - self._findings_at >= FINDINGS_EVERY:
            try:
                self._findings = findings_for(self.model, frame.rows, borrows=borrows)
            except Exception:  # a rule failing on odd data must not take the view down
                self._findings = {}
            self._findings_at = now
        extra = {**frame.extra, "findings": self._findings, "borrows": borrows}
        self.frame = replace(frame, extra=extra)
        return self.frame

    def _detail_borrows(self) -> dict[tuple[str, str], tuple[Borrow, ...]]:
        """In the detail view, the selected pool's outstanding borrows from its source's
        ``/poolmon/snapshot.json`` (when it serves one): one small request per refresh."""
        if self.state.screen != "detail":
            return {}
        rows = self.rows()
        if not rows:
            return {}
        row = rows[min(self.state.selected, len(rows) - 1)]
        for source in self.sources:
            reader = getattr(source, "snapshot_document", None)
            if source.label == row.source and reader is not None:
                known = borrows_by_pool(reader()) or {}
                return {row.key: known[row.name]} if row.name in known else {}
        return {}

    def rows(self) -> list[PoolRow]:
        return select_rows(
            self.frame.rows, self.state.sort, reverse=self.state.reverse, text=self.state.filter
        )

    def press(self, key: str) -> ViewState:
        self.state = apply_key(self.state, key, len(self.rows()))
        return self.state

    def render(self, height: int | None = None) -> RenderableType:
        return screen(
            self.frame,
            self.state,
            self.rows(),
            height=height if height is not None else self.console.size.height,
            thresholds=self.thresholds,
            banner=self._banner() if self._banner is not None else None,
        )

    # ------------------------------------------------------------------ the live loop

    def run(self, keys: KeyReader | None = None, *, until: float | None = None) -> int:
        """The interactive loop; returns the exit status (0 after ``q`` or at ``until``, a
        deadline on the app's clock)."""
        reader = keys if keys is not None else KeyReader()
        results: queue.SimpleQueue[list[SourceResult]] = queue.SimpleQueue()
        wake_r, wake_w = os.pipe()
        inflight = False
        due = self._clock()

        def fetch() -> None:
            try:
                results.put(fetch_all(self.sources, self.fetch_timeout + 1.0))
            finally:
                os.write(wake_w, b"x")

        try:
            with sigterm_raises(), reader, self._live() as live:
                live.update(self.render(), refresh=True)
                while not self.state.quit:
                    now = self._clock()
                    if until is not None and now >= until:
                        break
                    if not inflight and not self.state.paused and now >= due:
                        inflight = True
                        due = now + self.state.interval
                        threading.Thread(target=fetch, daemon=True, name="poolmon-top").start()
                    timeout = None if inflight or self.state.paused else max(0.0, due - now)
                    if until is not None:
                        timeout = max(0.0, min(until - now, 3600.0 if timeout is None else timeout))
                    pressed, woke = reader.wait(timeout, wake_r)
                    if woke:
                        inflight = False
                        while not results.empty():
                            self.apply(results.get())
                    for key in pressed:
                        self.press(key)
                    if woke or pressed:
                        live.update(self.render(), refresh=True)
        finally:
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def _live(self) -> Live:
        return Live(
            console=self.console,
            screen=True,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While active, SIGTERM raises :class:`Terminated` in the main thread (so ``finally``
    blocks restore the terminal); outside the main thread it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_once(
    frame: Frame,
    state: ViewState,
    *,
    as_json: bool = False,
    console: Console | None = None,
    out: TextIO | None = None,
    thresholds: Thresholds | None = None,
) -> None:
    """``--once``: the frame as text (every matching row) or as one JSON document."""
    rows = select_rows(frame.rows, state.sort, reverse=state.reverse, text=state.filter)
    if as_json:
        raw = replace(frame, rows=tuple(rows)).to_dict()
        found = frame.extra.get("findings") or {}
        raw["findings"] = [f.to_dict() for r in rows for f in found.get(r.key, ())]
        doc = _finite(raw)
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False)
        if out is not None:
            out.write(text + "\n")
        else:
            print(text)
        return
    con = console if console is not None else Console()
    con.print(header(frame, state, len(rows), live=False))
    status = status_lines(frame)
    if status:
        con.print(status)
    if rows:
        con.print(
            pool_table(
                rows,
                thresholds=thresholds,
                show_source=len(frame.sources) > 1,
                findings=frame.extra.get("findings"),
            )
        )
    else:
        con.print("no pools")
    if len(frame.sources) > 1 and frame.backends:
        con.print(backend_table(frame))
    if frame.capacity:
        con.print(capacity_text(frame))


def _finite(value: object) -> object:
    """JSON has no NaN or infinity: such values (a gauge that says NaN) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
