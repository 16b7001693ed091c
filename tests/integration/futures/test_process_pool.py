"""The futures shim on real ProcessPoolExecutors (fork start method): exact counts, breaks, exits.

Synchronisation is by multiprocessing events and semaphores handed to the workers through the
executor's initializer (inherited, never pickled into a task), and by joining the executor's
management thread: no sleeps, no timing assertions.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

from poolmon.conformance import validate_stream
from poolmon.core.registry import PoolRegistry
from poolmon.core.snapshot import PoolSnapshot
from poolmon.shims import futures
from poolmon.shims._patch import WRAPPED_MARK

pytestmark = pytest.mark.integration

_FORK = mp.get_context("fork")
_sync: dict[str, Any] = {}  # in a worker: the gate and the started semaphore (initializer)


def _init(gate: Any, started: Any) -> None:
    _sync["gate"] = gate
    _sync["started"] = started


def _blocker() -> int:
    _sync["started"].release()
    _sync["gate"].wait()
    return os.getpid()


def _crash() -> None:
    os._exit(3)


def _echo(value: object) -> object:
    return value


def _fail_init() -> None:
    raise RuntimeError("no worker today")


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


def _snap(reg: PoolRegistry) -> PoolSnapshot:
    (snap,) = [s for s in reg.snapshot() if s.name.startswith("processes://")]
    return snap


def _kinds(lines: list[str]) -> list[str]:
    return [json.loads(line)["kind"] for line in lines]


def test_exact_counts_under_many_submitters_with_cancels_and_cancel_futures(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    gate, started = _FORK.Event(), _FORK.Semaphore(0)
    ex = cf.ProcessPoolExecutor(2, mp_context=_FORK, initializer=_init, initargs=(gate, started))
    blockers = [ex.submit(_blocker) for _ in range(2)]
    for _ in blockers:  # both workers run a blocker: every later task queues
        assert started.acquire(timeout=60)
    # typeshed declares this attribute as a _ThreadWakeup; it is the _ExecutorManagerThread.
    manager: threading.Thread = ex._executor_manager_thread  # type: ignore[assignment]
    submitters, per = 8, 25
    queued: list[list[cf.Future[int]]] = [[] for _ in range(submitters)]
    barrier = threading.Barrier(submitters)

    def submit_many(i: int) -> None:
        barrier.wait()
        for n in range(per):
            queued[i].append(ex.submit(pow, n, 2))

    threads = [threading.Thread(target=submit_many, args=(i,)) for i in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [f for fs in queued for f in fs]
    # A few queued tasks may already sit in the call queue (RUNNING from the parent's view, not
    # cancellable, still waiting for a worker): cancel() tells which.
    cancelled_by_caller = sum(f.cancel() for f in flat[::7])
    snap = _snap(reg)
    assert snap.pending == len(flat) - cancelled_by_caller  # the queue depth, exactly
    assert (snap.used, snap.idle, snap.max) == (2, 0, 2)
    assert snap.errors["cancelled"] == cancelled_by_caller
    ex.shutdown(wait=False, cancel_futures=True)
    gate.set()
    for f in blockers:
        f.result(timeout=60)
    manager.join(timeout=120)
    assert not manager.is_alive()
    assert all(f.done() for f in flat)
    ran = sum(1 for f in flat if not f.cancelled())
    cancelled = len(flat) - ran
    assert cancelled > cancelled_by_caller  # shutdown(cancel_futures=True) cancelled the rest
    snap = _snap(reg)
    assert snap.errors["cancelled"] == cancelled
    assert snap.wait_time.count == ran + len(blockers)  # one borrow per task that started
    assert snap.use_time.count == ran + len(blockers)  # and one return
    assert (snap.pending, snap.used, snap.idle) == (0, 0, 0)
    assert snap.evictions["pool_closed"] == 2 and snap.closed
    kinds = _kinds(lines)
    assert kinds.count("wait") == len(flat) + len(blockers)
    assert kinds.count("create") == 2 and kinds[-1] == "close"
    assert validate_stream(lines) == []


def test_a_worker_that_dies_breaks_the_pool_and_every_wait_resolves(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    gate, started = _FORK.Event(), _FORK.Semaphore(0)
    ex = cf.ProcessPoolExecutor(2, mp_context=_FORK, initializer=_init, initargs=(gate, started))
    held = ex.submit(_blocker)  # running on one worker when the other dies
    assert started.acquire(timeout=60)
    # typeshed declares this attribute as a _ThreadWakeup; it is the _ExecutorManagerThread.
    manager: threading.Thread = ex._executor_manager_thread  # type: ignore[assignment]
    crash = ex.submit(_crash)
    rest = [ex.submit(pow, n, 2) for n in range(10)]
    manager.join(timeout=120)
    assert not manager.is_alive()
    every: list[cf.Future[Any]] = [held, crash, *rest]
    for f in every:
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=0)
    snap = _snap(reg)
    submitted = 2 + len(rest)
    # Every wait resolved once: by a borrow, or by the break (error pool_closed in phase wait).
    assert snap.wait_time.count + snap.errors["pool_closed"] == submitted
    assert snap.wait_time.count >= 2  # the blocker and the crash both started
    assert snap.use_time.count == 0  # no task returned
    assert snap.evictions["broken"] == 2 and snap.evictions["pool_closed"] == 0
    assert (snap.pending, snap.used, snap.idle) == (0, 0, 0) and snap.closed
    ex.shutdown(wait=True)
    assert _kinds(lines).count("close") == 1
    assert validate_stream(lines) == []


def test_a_failing_initializer_breaks_the_pool(registry: tuple[PoolRegistry, list[str]]) -> None:
    reg, lines = registry
    ex = cf.ProcessPoolExecutor(1, mp_context=_FORK, initializer=_fail_init)
    fs = [ex.submit(pow, 2, 2) for _ in range(4)]
    for f in fs:
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=60)
    ex.shutdown(wait=True)
    snap = _snap(reg)
    assert snap.evictions["broken"] == 1
    assert snap.wait_time.count + snap.errors["pool_closed"] == 4
    assert (snap.pending, snap.used, snap.idle) == (0, 0, 0) and snap.closed
    assert validate_stream(lines) == []


def test_results_exceptions_map_chunks_and_an_unpicklable_call(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    with cf.ProcessPoolExecutor(2, mp_context=_FORK) as ex:
        assert sum(ex.map(abs, range(-6, 6), chunksize=4)) == 36  # 3 tasks of 4 items
        errs = [ex.submit(int, "x") for _ in range(5)]
        for f in errs:
            with pytest.raises(ValueError):
                f.result()
        unpicklable = ex.submit(_echo, threading.Lock())  # fails in the call queue's feeder
        with pytest.raises((TypeError, pickle.PicklingError)):
            unpicklable.result(timeout=60)
        assert ex.submit(pow, 3, 2).result() == 9
    snap = _snap(reg)
    tasks = 3 + 5 + 1 + 1
    assert snap.wait_time.count == tasks and snap.use_time.count == tasks
    assert snap.errors["other"] == 0 and snap.identity.resource == "worker"
    assert snap.identity.as_attributes()["pool.resource"] == "worker"
    assert snap.evictions["pool_closed"] == 2 and snap.max == 2 and snap.closed
    assert validate_stream(lines) == []


def test_max_tasks_per_child_exits_are_lifetime_evictions(
    registry: tuple[PoolRegistry, list[str]],
) -> None:
    reg, lines = registry
    # One task at a time: CPython 3.11's executor can hang when workers reach
    # max_tasks_per_child under concurrent submits (gh-115634, fixed in 3.12.3), shim or not.
    ctx = mp.get_context("forkserver")  # max_tasks_per_child refuses the fork start method
    with cf.ProcessPoolExecutor(2, mp_context=ctx, max_tasks_per_child=2) as ex:
        assert sum(ex.submit(pow, n, 2).result(timeout=60) for n in range(8)) == 140
    snap = _snap(reg)
    kinds = _kinds(lines)
    assert snap.wait_time.count == 8 and snap.use_time.count == 8
    # 8 tasks, 2 per worker: exactly 4 workers ran out of tasks; the others closed.
    assert snap.evictions["max_lifetime"] == 4
    assert kinds.count("create") == snap.evictions["max_lifetime"] + snap.evictions["pool_closed"]
    assert (snap.pending, snap.used, snap.idle) == (0, 0, 0) and snap.closed
    assert validate_stream(lines) == []


def test_uninstrument_restores_the_process_pool_originals() -> None:
    from concurrent.futures import process

    before = {
        name: vars(process._ExecutorManagerThread)[name]
        for name in ("run", "add_call_item_to_queue", "process_result_item", "terminate_broken")
    }
    spawn = vars(process.ProcessPoolExecutor)["_spawn_process"]
    assert futures.instrument(registry=PoolRegistry())
    assert hasattr(vars(process.ProcessPoolExecutor)["_spawn_process"], WRAPPED_MARK)
    futures.uninstrument()
    assert vars(process.ProcessPoolExecutor)["_spawn_process"] is spawn
    for name, original in before.items():
        assert vars(process._ExecutorManagerThread)[name] is original
