"""A JSONL log written by the real JsonlSink replays into the same state; --replay through the
CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolmon.cli import main
from poolmon.core.clock import ManualClock
from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import JsonlSink
from poolmon.top.replay import JsonlReplay
from poolmon.top.sources import ReplaySource

from .conftest import traffic


def _record(path: Path, pools: int = 2) -> PoolRegistry:
    clock = ManualClock(start=5.0, wall_start=1_700_000_000.0)
    registry = PoolRegistry(clock=clock)
    sink = JsonlSink(path)
    registry.subscribe(sink)
    for i in range(pools):
        ledger = registry.register(
            identity_from_url(f"redis://:tok3n@cache{i}:6379/0"), max_size=3 + i
        )
        traffic(clock, ledger, i)
        t0 = clock.monotonic()
        conn = ledger.create(t0)
        ledger.borrow(conn)
        clock.advance(2.0)  # borrows still out: the oldest-use gauge must replay too
    sink.close()
    return registry


def test_replay_reproduces_the_recorded_state(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    recorded = _record(path)
    replay = JsonlReplay(path)
    assert replay.poll() > 0 and replay.skipped == 0
    got = {s.name: s for s in replay.registry.snapshot()}
    for want in recorded.snapshot():
        have = got[want.name]
        assert (have.idle, have.used, have.pending, have.max) == (
            want.idle,
            want.used,
            want.pending,
            want.max,
        )
        assert have.evictions == want.evictions and have.errors == want.errors
        assert have.wait_time.counts == want.wait_time.counts
        assert have.create_time["error"].count == want.create_time["error"].count
        assert have.identity.system == "redis" and have.identity.server_port == 6379
    assert "tok3n" not in path.read_text()


def test_incremental_poll_partial_lines_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    _record(path, pools=1)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + lines[3][:10])  # a half-written line
    replay = JsonlReplay(path)
    first = replay.poll()
    assert first == 3
    with path.open("a") as f:
        f.write(lines[3][10:])
        f.write("not json\n")
        f.write('{"kind": "no-such-kind", "ts": 1, "pool": "x"}\n')
        f.writelines(lines[4:])
    assert replay.poll() == len(lines) - 3
    assert replay.skipped == 2


def test_missing_file_is_a_down_source(tmp_path: Path) -> None:
    (result,) = ReplaySource(tmp_path / "nope.jsonl").fetch()
    assert not result.ok and result.error and "No such file" in result.error


def test_cli_replay_once_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.jsonl"
    _record(path, pools=2)
    assert main(["top", "--replay", str(path), "--once"]) == 0
    out = capsys.readouterr().out
    assert "redis://cache0:6379/0" in out and "redis://cache1:6379/0" in out
    assert "2 pools" in out and "tok3n" not in out

    assert (
        main(["top", "--replay", str(path), "--once", "--json", "--sort", "name", "--reverse"]) == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["pools"]] == ["redis://cache1:6379/0", "redis://cache0:6379/0"]
    assert doc["pools"][0]["used"] == 2 and doc["pools"][0]["max"] == 4
    # Replay time is event time: the oldest borrow's age at the pool's last event.
    assert doc["pools"][0]["oldest_use"] == pytest.approx(0.5)
    assert doc["sources"] == [
        {"source": "replay:events.jsonl", "ok": True, "pools": 2, "error": None}
    ]

    assert main(["top", "--replay", str(path), "--once", "--json", "--filter", "cache1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["pools"]] == ["redis://cache1:6379/0"]


def test_cli_rejects_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", "--replay", "x", "--json"]) == 2
    assert "--json is invalid without --once" in capsys.readouterr().err
    assert main(["top", "--replay", "x", "--once", "--interval", "0"]) == 2
    assert (
        "--interval=0.0 is invalid: expected seconds within [0.1, 3600]" in capsys.readouterr().err
    )
    assert main(["top", "--replay", str(tmp_path / "missing"), "--once"]) == 1
    assert "DOWN replay:missing" in capsys.readouterr().out


def test_replay_of_a_worker_pool_says_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The JSONL ``open`` event's ``resource`` (spec 1.1) reaches the row and its words."""
    lines = [
        {
            "v": "1.1",
            "kind": "open",
            "ts": 10.0,
            "pool": "threads://w",
            "pid": 7,
            "max": 2,
            "resource": "worker",
        },
        {
            "v": "1.1",
            "kind": "create",
            "ts": 10.1,
            "pool": "threads://w",
            "pid": 7,
            "conn": 1,
            "duration": 0.001,
            "outcome": "ok",
        },
        {"v": "1.1", "kind": "wait", "ts": 10.2, "pool": "threads://w", "pid": 7, "pending": 1},
        {
            "v": "1.1",
            "kind": "borrow",
            "ts": 10.3,
            "pool": "threads://w",
            "pid": 7,
            "conn": 1,
            "duration": 0.1,
            "queued": True,
        },
    ]
    path = tmp_path / "workers.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["top", "--replay", str(path), "--once"]) == 0
    out = capsys.readouterr().out
    assert "WORKERS used/idle/max" in out and "threads://w" in out
    assert main(["top", "--replay", str(path), "--once", "--json"]) == 0
    (pool,) = json.loads(capsys.readouterr().out)["pools"]
    assert (pool["resource"], pool["used"], pool["max"]) == ("worker", 1, 2)
