"""Turning what ``poolmon top`` reads into :class:`PoolWindow` records.

The readers are top's own (:mod:`poolmon.top.sources`, :mod:`poolmon.top.page`,
:mod:`poolmon.top.replay`), asked for the wider series set :data:`DOCTOR_METRICS`:

* a ``/metrics`` URL: one page is a window over each pool's whole life (counters from zero);
  ``/poolmon/snapshot.json`` beside it, when served, adds the outstanding borrows and stacks;
* a Prometheus server: the same series at the window's start and end (two instant queries, so
  the cost does not grow with the window), the peak of ``used`` by ``max_over_time``, the
  creates of pools first scraped inside the window (storms), and the backend limits
  postgres_exporter / redis_exporter publish;
* a JSONL event log: replayed into ledgers, with event times kept for storms and breakage;
* an in-process :class:`PoolRegistry`.

A source that cannot be read becomes a :class:`SourceProblem` (``down``); lines that cannot be
parsed become problems naming the line. Nothing here raises for bad input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry
from poolmon.doctor.backend import limits_from_backend_samples, limits_from_prometheus
from poolmon.doctor.model import BackendLimit, Borrow, Breakage, PoolWindow, SourceProblem
from poolmon.top.replay import JsonlReplay
from poolmon.top.samples import DOCTOR_METRICS, PoolSample, sample_from_snapshot
from poolmon.top.sources import MetricsUrlSource, PrometheusSource, _describe

__all__ = [
    "Collected",
    "borrows_by_pool",
    "from_jsonl",
    "from_metrics_url",
    "from_prometheus",
    "from_registry",
]


@dataclass(slots=True)
class Collected:
    """Windows, problems and limits gathered from sources."""

    windows: list[PoolWindow] = field(default_factory=list)
    problems: list[SourceProblem] = field(default_factory=list)
    limits: list[BackendLimit] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def extend(self, other: Collected) -> None:
        self.windows += other.windows
        self.problems += other.problems
        self.limits += other.limits
        self.sources += other.sources


def borrows_by_pool(document: Mapping[str, Any] | None) -> dict[str, tuple[Borrow, ...]] | None:
    """Outstanding borrows by pool name from a ``/poolmon/snapshot.json`` document."""
    if document is None:
        return None
    out: dict[str, tuple[Borrow, ...]] = {}
    try:
        for pool in document.get("pools", []):
            out[str(pool["name"])] = tuple(
                Borrow(int(b["conn"]), float(b["age"]), b.get("stack"))
                for b in pool.get("borrows", [])
            )
    except (KeyError, TypeError, ValueError):
        return None  # not the document this version writes: numbers only
    return out


def from_metrics_url(url: str, *, timeout: float = 5.0) -> Collected:
    source = MetricsUrlSource(url, timeout=timeout, wanted=DOCTOR_METRICS)
    out = Collected(sources=[source.label])
    [result] = source.fetch()
    if not result.ok:
        out.problems.append(SourceProblem(source.label, down=True, message=f"down: {result.error}"))
        return out
    for number, line in source.problems:
        out.problems.append(
            SourceProblem(
                source.label,
                down=False,
                message=f"line {number}: not a valid sample, skipped: {line}",
            )
        )
    out.limits.extend(limits_from_backend_samples(result.backends))
    borrows = borrows_by_pool(source.snapshot_document())
    for sample in result.pools:
        out.windows.append(
            PoolWindow(
                source=source.label,
                last=sample,
                window="since the pool started (one /metrics page)",
                peak_used=sample.used,
                borrows=None if borrows is None else borrows.get(sample.name, ()),
            )
        )
    return out


def _duration_text(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def from_prometheus(
    url: str,
    *,
    window: float = 3600.0,
    end: float | None = None,
    timeout: float = 30.0,
    storm_window: float = 5.0,
) -> Collected:
    """Every pool Prometheus knows, over ``[end - window, end]``."""
    source = PrometheusSource(url, timeout=timeout, wanted=DOCTOR_METRICS)
    out = Collected(sources=[source.label])
    stop = time.time() if end is None else end
    last = source.fetch(at=stop)
    if len(last) == 1 and not last[0].ok and last[0].source == source.label:
        out.problems.append(
            SourceProblem(source.label, down=True, message=f"down: {last[0].error}")
        )
        return out
    first = {r.source: {p.name: p for p in r.pools} for r in source.fetch(at=stop - window) if r.ok}
    rng = _duration_text(window)
    peaks: dict[tuple[str, str], float] = {}
    starts: dict[tuple[str, str], tuple[float, ...]] = {}
    used = f'max_over_time(pool_connection_usage{{pool_connection_state="used"}}[{rng}])'
    reads: list[tuple[str, Callable[[], None]]] = [
        ("peak of used", lambda: peaks.update(_by_pool(source.query(used, stop), source.label))),
        ("pool starts", lambda: starts.update(_starts(source, rng, stop, window))),
        (
            "backend limits",
            lambda: out.limits.extend(limits_from_prometheus(lambda q: source.query(q, stop))),
        ),
    ]
    for what, read in reads:
        try:
            read()
        except Exception as exc:  # one failed query leaves the rest of the diagnosis intact
            out.problems.append(
                SourceProblem(
                    source.label, down=False, message=f"{what} query failed: {_describe(exc)}"
                )
            )
    described = f"last {rng} (Prometheus)"
    for result in last:
        if not result.ok:
            out.problems.append(
                SourceProblem(result.source, down=True, message=f"down: {result.error}")
            )
            continue
        before = first.get(result.source, {})
        for sample in result.pools:
            start = before.get(sample.name)
            out.windows.append(
                PoolWindow(
                    source=result.source,
                    last=sample,
                    first=start,
                    seconds=window if start is not None else None,
                    window=described
                    if start is not None
                    else f"since the pool started (within {described})",
                    peak_used=peaks.get((result.source, sample.name), sample.used),
                    create_times=starts.get((result.source, sample.name), ()),
                )
            )
    return out


def _by_pool(items: Sequence[Mapping[str, Any]], default: str) -> dict[tuple[str, str], float]:
    return {
        (str(i["metric"].get("instance", default)), str(i["metric"].get("pool_name"))): float(
            i["value"][1]
        )
        for i in items
    }


def _starts(
    source: PrometheusSource, rng: str, stop: float, window: float
) -> dict[tuple[str, str], tuple[float, ...]]:
    """For pools first scraped inside the window: their creates at that first scrape, dated
    then (what the storm rule counts; a pool already known at the window's start has none).
    Counters only grow, so ``min_over_time`` is the first value. First-scrape times come from
    a subquery in 1,000 steps of the window, so they are as precise as one step."""
    step = max(1, round(window / 1000.0))  # whole seconds: PromQL durations take no decimals
    first_seen = {
        (str(i["metric"].get("instance")), str(i["metric"].get("pool_name"))): float(i["value"][1])
        for i in source.query(f"min_over_time(timestamp(pool_info)[{rng}:{step}s])", stop)
    }
    window_start = stop - window + 1.5 * step
    out: dict[tuple[str, str], tuple[float, ...]] = {}
    query = f'min_over_time(pool_connection_create_time_seconds_count{{outcome="ok"}}[{rng}])'
    for item in source.query(query, stop):
        key = (str(item["metric"].get("instance")), str(item["metric"].get("pool_name")))
        seen = first_seen.get(key)
        creates = int(float(item["value"][1]))
        if seen is not None and seen > window_start and creates:
            out[key] = (seen,) * creates
    return out


class _EventTimes:
    """Per pool of a replay: times of creates that grew the pool, breakages after quiet, the
    peaks of used and open connections."""

    def __init__(self) -> None:
        self.creates: dict[tuple[str, object], list[float]] = {}
        self.breakages: dict[tuple[str, object], list[Breakage]] = {}
        self.active: dict[tuple[str, object], float] = {}
        self.borrowed: dict[tuple[str, object], set[object]] = {}
        self.peak: dict[tuple[str, object], int] = {}
        self.first: float | None = None
        self.open: dict[tuple[str, object], int] = {}
        self.peak_open: dict[tuple[str, object], int] = {}
        self.leak_stacks: dict[tuple[str, object], list[str]] = {}

    def __call__(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        key = (ledger.name, event.get("pid"))
        kind = event["kind"]
        ts = float(event["ts"])
        if self.first is None or ts < self.first:
            self.first = ts
        if kind == "create" and event.get("outcome", "ok") == "ok":
            self.open[key] = now_open = self.open.get(key, 0) + 1
            if now_open > self.peak_open.get(key, 0):
                # A create that grows the pool to a new high: what a storm is made of (a
                # replacement of a discarded or broken connection is churn, not a storm).
                self.peak_open[key] = now_open
                self.creates.setdefault(key, []).append(ts)
        elif kind == "borrow":
            held = self.borrowed.setdefault(key, set())
            held.add(event.get("conn"))
            self.peak[key] = max(self.peak.get(key, 0), len(held))
            self.active[key] = ts
        elif kind == "return":
            self.borrowed.setdefault(key, set()).discard(event.get("conn"))
            self.active[key] = ts
        elif kind == "error" and event.get("error_type") == "leak_suspected":
            stack = event.get("stack")
            if isinstance(stack, str):
                self.leak_stacks.setdefault(key, []).append(scrub(stack))
        elif kind == "evict":
            self.open[key] = max(0, self.open.get(key, 0) - 1)
            self.borrowed.setdefault(key, set()).discard(event.get("conn"))
            if event.get("reason") in ("broken", "failed_validation"):
                quiet = ts - self.active.get(key, ts)
                self.breakages.setdefault(key, []).append(Breakage(ts, quiet))


def from_jsonl(path: str | Path) -> Collected:
    label = f"replay:{Path(path).name}"
    times = _EventTimes()
    replay = JsonlReplay(path, observer=times)
    out = Collected(sources=[label])
    try:
        replay.poll()
    except OSError as exc:
        out.problems.append(
            SourceProblem(label, down=True, message=f"cannot read: {exc.strerror or exc}")
        )
        return out
    for number, reason in replay.problems:
        out.problems.append(
            SourceProblem(label, down=False, message=f"line {number}: {reason}, skipped")
        )
    if replay.skipped > len(replay.problems):
        out.problems.append(
            SourceProblem(label, down=False, message=f"{replay.skipped} lines skipped in all")
        )
    end = replay.event_time
    start = times.first if times.first is not None else end
    seconds = max(0.0, end - start)
    described = f"events over {seconds:.2f}s ({Path(path).name})"
    for ledger in replay.registry.ledgers():
        snap = ledger.snapshot()
        key = (ledger.name, snap.identity.pid)
        out.windows.append(
            PoolWindow(
                source=label,
                last=sample_from_snapshot(snap),
                seconds=seconds or None,
                window=described,
                peak_used=float(times.peak.get(key, snap.used)),
                peak_open=float(times.peak_open.get(key, snap.idle + snap.used)),
                create_times=tuple(times.creates.get(key, ())),
                breakages=tuple(times.breakages.get(key, ())),
                leak_stacks=tuple(times.leak_stacks.get(key, ())),
                borrows=tuple(Borrow(b.conn, b.age, b.stack) for b in ledger.leaks(0.0)),
            )
        )
    return out


def from_registry(
    registry: PoolRegistry,
    *,
    label: str = "local",
    previous: Sequence[PoolSample] = (),
    seconds: float | None = None,
) -> Collected:
    """Windows of an in-process registry; ``previous`` samples (with ``seconds`` between) make
    a window between two readings, else each pool's whole life is the window."""
    before = {p.name: p for p in previous}
    out = Collected(sources=[label])
    for ledger in registry.ledgers():
        snap = ledger.snapshot()
        sample = sample_from_snapshot(snap)
        start = before.get(sample.name)
        out.windows.append(
            PoolWindow(
                source=label,
                last=sample,
                first=start,
                seconds=seconds if start is not None else None,
                window=f"last {seconds:g}s"
                if start is not None and seconds
                else "since the pool started",
                peak_used=sample.used,
                borrows=tuple(Borrow(b.conn, b.age, b.stack) for b in ledger.leaks(0.0)),
            )
        )
    return out
