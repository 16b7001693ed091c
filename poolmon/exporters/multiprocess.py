"""Pre-fork servers (gunicorn, uWSGI, multiprocessing): every worker's pools behind one endpoint.

The problem: with several worker processes each has its own pools and its own registry, and a
scrape of one port reaches one process. The design, like prometheus_client's multiprocess mode:

* each **worker** runs a :class:`SnapshotWriter`: a daemon thread that writes the worker's pool
  snapshots to ``DIR/poolmon-<pid>.json`` every ``interval`` seconds (atomically: temp file +
  ``os.replace``, so a reader never sees half a file) and once more on close;
* **one process** (gunicorn's master, via ``when_ready``) serves ``/metrics`` with a
  :class:`MultiProcessCollector` over ``DIR``, which merges pools *by name* across workers:
  counters and histograms add up, so do live gauges (idle, used, pending, limits); the oldest
  borrow is the maximum. ``poolmon_pools`` counts the pools of every live worker.
* when a worker exits, :func:`mark_process_dead` (gunicorn's ``child_exit``) keeps its counters
  and histograms - totals must not go backwards - and zeroes its live gauges. A file whose pid no
  longer runs is treated the same way even without the hook.

Freshness: values lag by at most ``interval`` (default 1 s; scrapes are usually 15 s apart). The
core resets aggregates in a forked child (``PoolLedger.after_fork_in_child``), so a worker never
re-reports what its parent counted: the sum over files is exact. ``pool_info`` of a merged pool
carries the serving process's pid.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from poolmon.core.catalog import BUCKETS
from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.core.snapshot import HistogramSnapshot, PoolSnapshot
from poolmon.errors import ConfigError
from poolmon.exporters.model import build_families
from poolmon.exporters.prometheus import render_families

__all__ = [
    "FILE_PREFIX",
    "MultiProcessCollector",
    "SnapshotWriter",
    "mark_process_dead",
    "merge_snapshots",
    "read_directory",
    "write_snapshot",
]

_log = logging.getLogger("poolmon.exporters")

FILE_PREFIX: Final = "poolmon-"
_FORMAT: Final = 1
_HISTOGRAMS: Final = ("wait_time", "use_time", "lifetime")


# ---------------------------------------------------------------------- serialisation


def _hist_to_json(hist: HistogramSnapshot) -> list[Any]:
    return [list(hist.counts), hist.sum]


def _hist_from_json(bounds: tuple[float, ...], data: Sequence[Any]) -> HistogramSnapshot:
    counts = tuple(int(c) for c in data[0])
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"histogram has {len(counts)} buckets, expected {len(bounds) + 1}")
    return HistogramSnapshot(bounds, counts, float(data[1]))


def _snapshot_to_json(snap: PoolSnapshot) -> dict[str, Any]:
    ident = snap.identity
    return {
        "identity": {
            "name": ident.name,
            "system": ident.system,
            "server_address": ident.server_address,
            "server_port": ident.server_port,
            "namespace": ident.namespace,
            "library": ident.library,
            "library_version": ident.library_version,
            "pid": ident.pid,
        },
        "idle": snap.idle,
        "used": snap.used,
        "pending": snap.pending,
        "max": snap.max,
        "min": snap.min,
        "idle_max": snap.idle_max,
        "oldest_use": snap.oldest_use,
        "closed": snap.closed,
        "taken_at": snap.taken_at,
        **{name: _hist_to_json(getattr(snap, name)) for name in _HISTOGRAMS},
        "create_time": {k: _hist_to_json(v) for k, v in snap.create_time.items()},
        "evictions": dict(snap.evictions),
        "errors": dict(snap.errors),
        "validations": dict(snap.validations),
        "semconv_exported_by": snap.semconv_exported_by,
        "streams_used": snap.streams_used,
        "streams_max": snap.streams_max,
        "protocol_version": snap.protocol_version,
    }


def _snapshot_from_json(data: Mapping[str, Any]) -> PoolSnapshot:
    ident = PoolIdentity(**data["identity"])
    return PoolSnapshot(
        identity=ident,
        taken_at=float(data["taken_at"]),
        idle=int(data["idle"]),
        used=int(data["used"]),
        pending=int(data["pending"]),
        max=data["max"],
        min=data["min"],
        idle_max=data["idle_max"],
        wait_time=_hist_from_json(BUCKETS["wait_time"], data["wait_time"]),
        use_time=_hist_from_json(BUCKETS["use_time"], data["use_time"]),
        lifetime=_hist_from_json(BUCKETS["lifetime"], data["lifetime"]),
        create_time={
            k: _hist_from_json(BUCKETS["create_time"], v) for k, v in data["create_time"].items()
        },
        evictions={str(k): int(v) for k, v in data["evictions"].items()},
        errors={str(k): int(v) for k, v in data["errors"].items()},
        validations={str(k): int(v) for k, v in data["validations"].items()},
        oldest_use=float(data["oldest_use"]),
        closed=bool(data["closed"]),
        semconv_exported_by=data.get("semconv_exported_by"),
        streams_used=int(data.get("streams_used", 0)),
        streams_max=data.get("streams_max"),
        protocol_version=data.get("protocol_version"),
    )


def _path_for(directory: Path, pid: int) -> Path:
    return directory / f"{FILE_PREFIX}{pid}.json"


def _write_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, separators=(",", ":"))
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_snapshot(directory: str | os.PathLike[str], registry: PoolRegistry | None = None) -> Path:
    """Write this process's pools (and self-metrics) to ``directory``; returns the file."""
    reg = registry if registry is not None else get_default_registry()
    pid = os.getpid()
    payload = {
        "format": _FORMAT,
        "pid": pid,
        "dead": False,
        "pools": [_snapshot_to_json(s) for s in reg.snapshot()],
        "self_metrics": {k: dict(v) for k, v in reg.self_metrics.snapshot().items()},
    }
    path = _path_for(Path(directory), pid)
    _write_atomic(path, payload)
    return path


def _zero_live_state(pool: dict[str, Any]) -> dict[str, Any]:
    # A dead worker's connections are gone with it: keep what it counted, drop what it held.
    return {
        **pool,
        "idle": 0,
        "used": 0,
        "pending": 0,
        "max": None,
        "min": None,
        "idle_max": None,
        "oldest_use": 0.0,
    }


def mark_process_dead(pid: int, directory: str | os.PathLike[str]) -> None:
    """Record that worker ``pid`` exited (gunicorn ``child_exit`` hook): totals are kept, live
    gauges zeroed. Safe to call for a pid that never wrote a file."""
    path = _path_for(Path(directory), pid)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    data["dead"] = True
    data["pools"] = [_zero_live_state(p) for p in data.get("pools", [])]
    _write_atomic(path, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def read_directory(
    directory: str | os.PathLike[str],
) -> tuple[list[PoolSnapshot], dict[str, dict[str, int]], int]:
    """Every worker's pool snapshots (unmerged), summed self-metrics, and the number of pools in
    live workers, from ``directory``.

    Raises on an unreadable file; :class:`MultiProcessCollector` counts that as an export error.
    """
    snaps: list[PoolSnapshot] = []
    self_metrics: dict[str, dict[str, int]] = {}
    live = 0
    for path in sorted(Path(directory).glob(f"{FILE_PREFIX}*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # removed between glob and read
        pools = data.get("pools", [])
        if data.get("dead") or not _pid_alive(int(data["pid"])):
            pools = [_zero_live_state(p) for p in pools]
        else:
            live += len(pools)
        snaps.extend(_snapshot_from_json(p) for p in pools)
        for metric, values in data.get("self_metrics", {}).items():
            per_label = self_metrics.setdefault(metric, {})
            for label, count in values.items():
                per_label[label] = per_label.get(label, 0) + int(count)
    return snaps, self_metrics, live


def _add_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _add_counts(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out


def merge_snapshots(
    snapshots: Sequence[PoolSnapshot], pid: int | None = None
) -> list[PoolSnapshot]:
    """Merge snapshots of same-named pools from several processes (sums; oldest borrow: max).

    The merged identity is the first one seen, with ``pid`` (default: this process's).
    """
    merged: dict[str, PoolSnapshot] = {}
    for snap in snapshots:
        prev = merged.get(snap.name)
        if prev is None:
            merged[snap.name] = replace(
                snap, identity=snap.identity.with_pid(os.getpid() if pid is None else pid)
            )
            continue
        merged[snap.name] = replace(
            prev,
            taken_at=max(prev.taken_at, snap.taken_at),
            idle=prev.idle + snap.idle,
            used=prev.used + snap.used,
            pending=prev.pending + snap.pending,
            max=_add_opt(prev.max, snap.max),
            min=_add_opt(prev.min, snap.min),
            idle_max=_add_opt(prev.idle_max, snap.idle_max),
            wait_time=prev.wait_time.merged(snap.wait_time),
            use_time=prev.use_time.merged(snap.use_time),
            lifetime=prev.lifetime.merged(snap.lifetime),
            create_time={
                k: prev.create_time[k].merged(v) if k in prev.create_time else v
                for k, v in {**prev.create_time, **snap.create_time}.items()
            },
            evictions=_add_counts(prev.evictions, snap.evictions),
            errors=_add_counts(prev.errors, snap.errors),
            validations=_add_counts(prev.validations, snap.validations),
            oldest_use=max(prev.oldest_use, snap.oldest_use),
            closed=prev.closed and snap.closed,
        )
    return list(merged.values())


class MultiProcessCollector(Collector):
    """A prometheus_client collector over every worker's snapshot file in ``directory``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        semconv: bool = False,
        registry: PoolRegistry | None = None,
        include_own: bool = False,
    ) -> None:
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError("multiprocess_dir", str(directory), "an existing directory")
        self.directory = path
        self.semconv = semconv
        self._registry = registry  # where this (serving) process counts its own failures
        # include_own: the serving process has pools of its own too (``poolmon run`` serving a
        # program that forks workers later): its live snapshots join the workers' files.
        self.include_own = include_own

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        own = self._registry if self._registry is not None else get_default_registry()
        try:
            snaps, self_metrics, live = read_directory(self.directory)
        except Exception as exc:
            own.self_metrics.inc("poolmon.export.errors", "multiprocess")
            log_once(
                _log,
                "multiprocess-read",
                "poolmon: reading worker snapshots from %s failed (%s: %s); further failures are "
                "only counted in poolmon_export_errors_total",
                self.directory,
                type(exc).__name__,
                exc,
            )
            snaps, self_metrics, live = [], {}, 0
        if self.include_own:
            me = os.getpid()
            mine = own.snapshot()
            snaps = [*mine, *(s for s in snaps if s.identity.pid != me)]
            live += len(mine)
        for metric, values in own.self_metrics.snapshot().items():
            per_label = self_metrics.setdefault(metric, {})
            for label, count in values.items():
                per_label[label] = per_label.get(label, 0) + count
        families = build_families(merge_snapshots(snaps), self_metrics, semconv=self.semconv)
        for family in families:
            if family.spec.name == "poolmon.pools":
                family.points = {(): float(live)}  # pools in live workers, not merged names
        yield from render_families(families)


class SnapshotWriter:
    """Writes this process's snapshots to ``directory`` every ``interval`` seconds (daemon thread).

    Start it *in the worker* (gunicorn ``post_fork``): threads do not survive ``fork()``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        registry: PoolRegistry | None = None,
        interval: float = 1.0,
    ) -> None:
        if not interval > 0:
            raise ConfigError("interval", interval, "a number of seconds > 0")
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError("multiprocess_dir", str(directory), "an existing directory")
        self.directory = path
        self.interval = float(interval)
        self._registry = registry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="poolmon-snapshot-writer")
        self._thread.daemon = True

    @property
    def registry(self) -> PoolRegistry:
        return self._registry if self._registry is not None else get_default_registry()

    def start(self) -> SnapshotWriter:
        self.flush()
        self._thread.start()
        return self

    def flush(self) -> bool:
        """Write now; True on success (a failure is counted, logged once, never raised)."""
        try:
            write_snapshot(self.directory, self.registry)
        except Exception as exc:
            self.registry.self_metrics.inc("poolmon.export.errors", "multiprocess")
            log_once(
                _log,
                "multiprocess-write",
                "poolmon: writing snapshots to %s failed (%s: %s); further failures are only "
                "counted in poolmon_export_errors_total",
                self.directory,
                type(exc).__name__,
                exc,
            )
            return False
        return True

    def _run(self) -> None:
        # Event.wait is the sleep: close() sets it, so shutdown never waits out an interval.
        while not self._stop.wait(self.interval):
            self.flush()

    def close(self) -> None:
        """Stop the thread and write a final snapshot."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()
