"""The futures shim on real ThreadPoolExecutors: exact counts, cancellations, shutdown, asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import threading
from collections.abc import Iterator

import pytest

from poolmon.conformance import validate_stream
from poolmon.core.registry import PoolRegistry
from poolmon.core.snapshot import PoolSnapshot
from poolmon.shims import futures
from poolmon.shims._patch import WRAPPED_MARK


@pytest.fixture
def registry() -> Iterator[tuple[PoolRegistry, list[str]]]:
    reg = PoolRegistry()
    lines: list[str] = []
    reg.subscribe(lambda e: lines.append(json.dumps(e.to_dict())))
    assert futures.instrument(registry=reg)
    try:
        yield reg, lines
    finally:
        futures.uninstrument()


def _snap(reg: PoolRegistry, name: str) -> PoolSnapshot:
    (snap,) = [s for s in reg.snapshot() if s.name == name]
    return snap


def test_exact_counts_under_many_submitters_with_cancels_and_cancel_futures(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    ex = cf.ThreadPoolExecutor(max_workers=3, thread_name_prefix="exact")
    gate = threading.Event()
    blockers = [ex.submit(gate.wait) for _ in range(3)]  # every worker busy: the rest queue
    submitters, per = 8, 50
    queued: list[list[cf.Future[int]]] = [[] for _ in range(submitters)]
    start = threading.Barrier(submitters)

    def submit_many(i: int) -> None:
        start.wait()
        for n in range(per):
            queued[i].append(ex.submit(pow, n, 2))

    threads = [threading.Thread(target=submit_many, args=(i,)) for i in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [f for fs in queued for f in fs]
    cancelled_by_caller = sum(f.cancel() for f in flat[::7])  # queued: every one succeeds
    assert cancelled_by_caller == len(flat[::7])
    snap = _snap(reg, "threads://exact")
    assert snap.pending == len(flat) - cancelled_by_caller  # queue depth, exactly
    assert snap.used == 3 and snap.max == 3
    ex.shutdown(wait=False, cancel_futures=True)  # drains and cancels the rest of the queue
    gate.set()
    for f in blockers:
        f.result()
    # Not cf.wait(flat): CPython's wait() never counts a future cancelled by
    # shutdown(cancel_futures=True) as done (it stays CANCELLED, not CANCELLED_AND_NOTIFIED).
    for t in list(ex._threads):
        t.join()
    assert all(f.done() for f in flat)
    ran = sum(1 for f in flat if not f.cancelled())
    cancelled = sum(1 for f in flat if f.cancelled())
    snap = _snap(reg, "threads://exact")
    assert snap.errors["cancelled"] == cancelled
    assert snap.wait_time.count == ran + len(blockers)  # one borrow per task that started
    assert snap.use_time.count == ran + len(blockers)  # and one return
    assert (snap.pending, snap.used, snap.idle) == (0, 0, 0)
    assert snap.evictions["pool_closed"] == 3 and snap.closed
    assert validate_stream(lines) == []
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds.count("wait") == len(flat) + len(blockers)
    assert kinds[-1] == "close"


def test_exceptions_are_returns_and_workers_are_resources(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    with cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="errs") as ex:
        fs = [ex.submit(int, "x") for _ in range(5)]
        for f in fs:
            with pytest.raises(ValueError):
                f.result()
    snap = _snap(reg, "threads://errs")
    assert snap.use_time.count == 5 and snap.errors["other"] == 0
    assert snap.identity.resource == "worker"
    assert snap.identity.as_attributes()["pool.resource"] == "worker"
    created = sum(1 for line in lines if json.loads(line)["kind"] == "create")
    assert 1 <= created <= 2 and snap.evictions["pool_closed"] == created
    assert validate_stream(lines) == []


def test_a_failing_initializer_is_a_failed_create_and_resolves_the_queue(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry

    submitted = threading.Event()

    def boom() -> None:
        submitted.wait()  # else a later submit() may already find the pool broken (and raise)
        raise RuntimeError("no worker today")

    ex = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="broken", initializer=boom)
    fs = [ex.submit(pow, 2, 2) for _ in range(4)]
    submitted.set()
    for f in fs:
        with pytest.raises(cf.BrokenExecutor):
            f.result()
    ex.shutdown(wait=True)
    snap = _snap(reg, "threads://broken")
    assert snap.errors["create_failed"] >= 1 and snap.pending == 0
    assert snap.errors["pool_closed"] + snap.wait_time.count == len(fs)
    assert validate_stream(lines) == []


def test_asyncio_default_executor_is_observed(registry: tuple[PoolRegistry, list[str]]) -> None:
    reg, lines = registry

    async def main() -> PoolSnapshot:
        loop = asyncio.get_running_loop()
        got = await asyncio.gather(*(loop.run_in_executor(None, abs, -n) for n in range(20)))
        assert list(got) == list(range(20))
        (snap,) = [s for s in reg.snapshot() if s.name.startswith("threads://asyncio")]
        return snap

    snap = asyncio.run(main())
    assert snap.wait_time.count == 20 and snap.use_time.count == 20 and snap.pending == 0
    # asyncio.run shuts its default executor down: the pool's stream ends with its close.
    mine = [json.loads(line) for line in lines if snap.name in line]
    assert mine[-1]["kind"] == "close"
    assert validate_stream(lines) == []


def test_uninstrument_restores_every_original_exactly() -> None:
    from concurrent.futures import _base
    from concurrent.futures import thread as thread_mod

    before = (
        thread_mod.ThreadPoolExecutor.__dict__["submit"],
        thread_mod._WorkItem.__dict__["run"],
        thread_mod._worker,
        _base.Future.__dict__["cancel"],
    )
    assert futures.instrument(registry=PoolRegistry())
    assert futures.instrument()  # twice changes nothing
    assert hasattr(thread_mod.ThreadPoolExecutor.submit, WRAPPED_MARK)
    futures.uninstrument()
    after = (
        thread_mod.ThreadPoolExecutor.__dict__["submit"],
        thread_mod._WorkItem.__dict__["run"],
        thread_mod._worker,
        _base.Future.__dict__["cancel"],
    )
    assert all(a is b for a, b in zip(before, after, strict=True))
    assert not futures.is_instrumented()
