"""Pre-fork support: per-worker snapshot files merged by one collector."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolmon.core import ManualClock, PoolRegistry
from poolmon.exporters.multiprocess import (
    MultiProcessCollector,
    mark_process_dead,
    merge_snapshots,
    read_directory,
    write_snapshot,
)
from tests.unit.exporters.workload import run_workload


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    assert found, name
    return total


def test_roundtrip_preserves_every_field(tmp_path: Path) -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    ledger, _ = run_workload(reg, clock)
    write_snapshot(tmp_path, reg)
    snaps, _, live = read_directory(tmp_path)
    assert live == 1
    original = ledger.snapshot()
    (read,) = snaps
    assert read.identity == original.identity
    assert read.wait_time == original.wait_time
    assert read.create_time == original.create_time
    assert read.evictions == original.evictions
    assert (read.idle, read.used, read.pending, read.max) == (
        original.idle,
        original.used,
        original.pending,
        original.max,
    )


def _fake_worker_file(directory: Path, pid: int, reg: PoolRegistry) -> None:
    path = write_snapshot(directory, reg)
    data = json.loads(path.read_text())
    data["pid"] = pid
    path.unlink()
    (directory / f"poolmon-{pid}.json").write_text(json.dumps(data))


def _exited_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def test_merged_totals_and_dead_workers(tmp_path: Path) -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    _ledger, truth = run_workload(reg, clock)
    dead = _exited_pid()
    _fake_worker_file(tmp_path, dead, reg)  # an exited worker with the same pool
    write_snapshot(tmp_path, reg)  # this (live) process
    prom = CollectorRegistry()
    prom.register(MultiProcessCollector(tmp_path))
    text = generate_latest(prom).decode()
    pool = truth.pool
    # Counters and histograms of the dead worker still count; its live gauges do not.
    assert _value(text, "pool_connection_timeouts_total", pool_name=pool) == 2 * truth.timeouts
    assert _value(text, "pool_connection_wait_time_seconds_count", pool_name=pool) == 200
    assert _value(text, "pool_connection_usage", pool_name=pool, pool_connection_state="used") == (
        truth.used
    )
    assert _value(text, "pool_connection_max", pool_name=pool) == truth.max
    assert _value(text, "poolmon_pools") == 1  # the dead worker's pool is gone
    mark_process_dead(dead, tmp_path)
    data = json.loads((tmp_path / f"poolmon-{dead}.json").read_text())
    assert data["dead"] is True and data["pools"][0]["used"] == 0
    assert data["pools"][0]["errors"]["timeout"] == truth.timeouts


def test_merge_takes_max_of_oldest_borrow() -> None:
    clock = ManualClock()
    a = PoolRegistry(clock=clock)
    run_workload(a, clock)
    b = PoolRegistry(clock=ManualClock())
    run_workload(b, ManualClock())
    clock.advance(5.0)
    merged = merge_snapshots([*a.snapshot(), *b.snapshot()], pid=1234)
    (snap,) = merged
    assert snap.oldest_use >= 5.0
    assert snap.identity.pid == 1234
    assert snap.used == 4 and snap.pending == 2


def test_unreadable_file_is_counted_not_raised(tmp_path: Path) -> None:
    (tmp_path / "poolmon-1.json").write_text("{not json")
    own = PoolRegistry()
    prom = CollectorRegistry()
    prom.register(MultiProcessCollector(tmp_path, registry=own))
    text = generate_latest(prom).decode()
    assert _value(text, "poolmon_export_errors_total", exporter="multiprocess") == 1
