"""poolmon.api: dependency-free, silent until a recorder attaches, bound straight to the ledger."""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

from poolmon import api
from poolmon.core import ManualClock, PoolRegistry
from poolmon.core.catalog import SPEC_VERSION
from poolmon.shims import api as api_shim

ROOT = Path(__file__).resolve().parents[2]
API_FILE = ROOT / "poolmon" / "api.py"


def test_importing_the_file_alone_imports_nothing_of_poolmon_or_third_parties() -> None:
    code = f"""
import importlib.util, json, sys
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("vendored_api", {str(API_FILE)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new = json.loads(out.stdout)
    stdlib = set(sys.stdlib_module_names)
    assert [m for m in new if m.split(".")[0] not in stdlib] == [api.HUB_KEY]


def test_spec_version_is_the_catalogs() -> None:
    assert api.SPEC_VERSION == SPEC_VERSION


def test_silent_tracker_is_noops_with_fresh_ids() -> None:
    assert api.attached() is None
    tracker = api.register("silent", max=2)
    assert not tracker.observed and tracker.now is time.perf_counter
    ids = [tracker.created(tracker.now()) for _ in range(3)]
    assert ids == [1, 2, 3]
    tracker.borrowed(1, None)  # no-ops: nothing to check but that they accept the calls
    tracker.returned(1)
    tracker.waiting()
    tracker.evicted(1, "broken")
    tracker.failed("timeout", "wait", t0=0.0)
    tracker.closed()


def test_ledger_recorder_binds_straight_to_the_ledger_and_detaches() -> None:
    clock = ManualClock()
    reg = PoolRegistry(clock=clock)
    tracker = api.register(
        "postgresql://app:hunter2@db:5432/x", "postgresql", max=3, resource="worker"
    )
    early = tracker.created(0.0)  # before attach: an id all the same
    assert api_shim.instrument(registry=reg)
    try:
        ledger = api_shim.ledger_of(tracker)
        assert ledger is not None and tracker.observed
        assert tracker.borrowed == ledger.borrow and tracker.returned == ledger.release
        assert "hunter2" not in ledger.name and ledger.identity.resource == "worker"
        t0 = tracker.now()
        cid = tracker.created(t0)
        assert cid == early + 1  # ids continue: never reused across attach
        clock.advance(0.5)
        tracker.borrowed(cid, t0)
        clock.advance(0.25)
        tracker.returned(cid)
        tracker.waiting()
        tracker.failed("timeout", "wait", "slow", t0=clock.monotonic() - 1.0)
        tracker.failed("create_failed", "create", "refused", t0=clock.monotonic())
        tracker.evicted(cid, "idle_timeout")
        tracker.closed()
        snap = ledger.snapshot()
        assert snap.wait_time.count == 1 and snap.wait_time.sum == 0.5
        assert snap.use_time.sum == 0.25 and snap.timeouts == 1
        assert snap.errors["create_failed"] == 1 and snap.create_time["error"].count == 1
        assert snap.evictions["idle_timeout"] == 1 and snap.pending == 0 and snap.closed
        later = api.register("later")
        assert later.observed  # trackers registered after attach are bound at once
    finally:
        api_shim.uninstrument()
    # One comparison: mypy would keep ``tracker.observed`` narrowed to True from the try block.
    assert (tracker.observed, tracker.state, reg.snapshot()) == (False, None, [])


def test_a_vendored_copy_shares_the_hub(tmp_path: Path) -> None:
    copy = tmp_path / "mylib_poolmon_api.py"
    copy.write_text(API_FILE.read_text())
    spec = importlib.util.spec_from_file_location("mylib_poolmon_api", copy)
    assert spec is not None and spec.loader is not None
    vendored = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vendored)
    theirs = vendored.register("vendored-pool", max=1)
    gc.collect()  # trackers of earlier tests' pools (held weakly by the hub) are gone first
    reg = PoolRegistry()
    api_shim.instrument(registry=reg)
    try:
        assert theirs.observed and [s.name for s in reg.snapshot()] == ["vendored-pool"]
    finally:
        api_shim.uninstrument()
    assert not theirs.observed


def test_a_recorder_that_raises_leaves_the_tracker_silent() -> None:
    class Broken:
        def bind(self, tracker: api.Tracker) -> None:
            tracker.bind(None, borrowed=print)  # half-bound, then fails
            raise RuntimeError("recorder bug")

        def unbind(self, tracker: api.Tracker) -> None:
            raise RuntimeError("recorder bug")

    recorder = Broken()
    api.attach(recorder)
    try:
        tracker = api.register("safe")
        assert not tracker.observed
        tracker.borrowed(1)  # the class's no-op again
    finally:
        api.detach(recorder)
    assert api.attached() is None
