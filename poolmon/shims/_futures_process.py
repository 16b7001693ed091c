"""Hook points of the futures shim for ``concurrent.futures.ProcessPoolExecutor``.

A process pool is a pool of **workers** (the worker processes) and **tasks** (spec 1.1,
``pool.resource`` = ``worker``), observed from the parent process only (nothing runs in the
children, whatever the start method):

* a worker process spawned (``_spawn_process``) is a ``create`` (its duration: ``Process.start``);
  it leaves as an ``evict``: ``pool_closed`` when it exits at shutdown, ``max_lifetime`` when it
  exits after ``max_tasks_per_child`` tasks, ``broken`` when a worker died and the pool broke
  (``BrokenProcessPool``: every worker is terminated);
* ``submit()`` is a ``wait``; the pending count is the queue depth (tasks not yet running);
* a task starts when the executor's management thread takes its work item and moves it to the
  call queue (``set_running_or_notify_cancel`` succeeded, the ``_CallItem`` is built) *and* a
  worker is free: that is the ``borrow`` of a worker (its duration: submit to start). The call
  queue holds ``max_workers + 1`` items, so a moved item may still have to wait for a worker:
  it stays pending (:attr:`ProcessTracker.deferred`) until a result frees one, then it takes it;
* the task's result (or exception) arriving back in the parent is the ``return`` (its duration:
  the run time as the parent sees it), recorded before the future's result is set;
* a queued task cancelled (``Future.cancel()``, ``shutdown(cancel_futures=True)``) resolves its
  wait as an ``error`` of type ``cancelled`` (the shared ``Future.cancel`` wrapper); tasks still
  waiting when the pool breaks resolve as ``pool_closed``; a call item that fails to pickle
  returns its worker at once (the worker never received it);
* the management thread ending (after ``shutdown()``, the executor's collection or a break) is
  the ``close``, after the last worker's evict.

Which worker runs which task is not visible in the parent (a result names no process), so a task
borrows *a* free worker of the pool's accounting: counts, pending, used and idle are exact at
every moment the parent can observe; the pairing of a task with a worker id is the parent's.
When a worker exits after ``max_tasks_per_child`` tasks, the id paired with it is swapped with
the id of the task whose result named it, so the exiting process is always evicted idle (its
``age`` is then the paired id's: an approximation, the only one).

Hook points (CPython 3.10-3.13 ``concurrent/futures/process.py``): ``_WorkItem.__init__`` (the
wait, tagged on the future, inside ``submit``), ``ProcessPoolExecutor._spawn_process``,
``_ExecutorManagerThread.run``, ``.add_call_item_to_queue`` (marks the thread for
``_CallItem.__init__``), ``_CallItem.__init__`` (the start), ``.process_result_item`` (the
return, a worker's exit), ``.terminate_broken``, ``_SafeQueue._on_queue_feeder_error`` and
``ProcessPoolExecutor.shutdown`` (the close of an executor whose management thread started
before ``instrument()``).
"""

from __future__ import annotations

import itertools
import platform
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Final, TypeVar

from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.shims._attrs import pop_attr
from poolmon.shims._psycopg_common import TRACKER_ATTR, PoolTracker, TrackingState

__all__ = [
    "ProcessTracker",
    "executor_limits",
    "executor_tracker",
    "item_init_hook",
    "make_state",
    "patch",
    "submit_hook",
    "worker_identity",
]

#: Attribute on a future while its task waits in the queue: ``(tracker, submit time)`` (the
#: same tag as the thread pools', so the shared ``Future.cancel`` wrapper resolves both).
TASK_ATTR: Final = "_poolmon_task"

Fn = Callable[..., Any]

# Per thread: the tracker of the executor whose submit() this thread is inside, and the
# management thread whose add_call_item_to_queue() is running (read by the constructors).
_tls = threading.local()

_names = itertools.count()

_T = TypeVar("_T", bound=PoolTracker)


class ProcessTracker(PoolTracker):
    """A process pool's tracker: the ledger's bound methods plus the parent's worker accounting.

    Invariants (``mutex`` guards every field below; ledger calls made under it are leaf calls):

    1. ``workers`` maps each live worker process's pid to its ledger id; ``free`` holds the ids
       with no task; every other live id is in ``running`` (work id -> worker id), exactly once.
    2. ``deferred`` holds, in call-queue order, the tasks moved to the call queue while no worker
       was free (their waits are still pending). It is non-empty only while ``free`` is empty:
       a worker becoming free (created, or its task's result arrived) takes the oldest at once.
    3. A worker's create is recorded with ``mutex`` held across ``Process.start()``, so the
       management thread cannot process a result of a process before its create.
    4. ``done`` is set once: after it, nothing is recorded (a break or the end of the management
       thread evicted every worker and closed the ledger).
    """

    __slots__ = ("deferred", "done", "free", "mutex", "running", "wait", "workers")

    def __init__(self, ledger: PoolLedger, state: TrackingState) -> None:
        super().__init__(ledger, state)
        self.wait = ledger.wait
        self.mutex = threading.Lock()
        self.workers: dict[int, int] = {}
        self.free: deque[int] = deque()
        self.running: dict[int, int] = {}
        self.deferred: deque[tuple[int, float]] = deque()
        self.done = False

    # -------------------------------------------------------------- workers (mutex held)

    def _worker_free(self, cid: int) -> None:
        if self.deferred:
            work_id, t0 = self.deferred.popleft()
            self.borrow(cid, t0, queued=True)
            self.running[work_id] = cid
        else:
            self.free.append(cid)

    def _take(self, cid: int) -> None:
        """Remove ``cid`` from the accounting (it is about to be evicted)."""
        try:
            self.free.remove(cid)
        except ValueError:
            for work_id, paired in tuple(self.running.items()):
                if paired == cid:
                    del self.running[work_id]

    def adopt(self, conn: Any, age: float = 0.0) -> int:
        cid = super().adopt(conn, age)
        with self.mutex:
            pid = getattr(conn, "pid", None)
            if pid is not None and pid not in self.workers:
                self.workers[pid] = cid
                self._worker_free(cid)
        return cid

    def spawn(self, original: Fn, executor: Any) -> None:
        """Run ``_spawn_process`` and record the new worker (invariant 3)."""
        with self.mutex:
            before = set(executor._processes)
            t0 = self.now()
            original(executor)
            if self.done:
                return
            for pid in set(executor._processes) - before:
                cid = self.created(executor._processes[pid], t0)
                self.workers[pid] = cid
                self._worker_free(cid)

    def worker_exited(self, pid: int, reason: str) -> None:
        with self.mutex:
            if self.done:
                return
            cid = self.workers.pop(pid, None)
            if cid is None:
                return
            self._take(cid)
            self.evict(cid, reason)

    # -------------------------------------------------------------- tasks

    def started(self, work_id: int, t0: float) -> None:
        """The task's work item went to the call queue: it takes a free worker or waits on."""
        with self.mutex:
            if self.done:
                return
            if self.free:
                cid = self.free.popleft()
                self.borrow(cid, t0, queued=True)
                self.running[work_id] = cid
            else:
                self.deferred.append((work_id, t0))

    def finished(self, work_id: int, exit_pid: int | None = None) -> None:
        """The task's result arrived (or its call item never reached a worker)."""
        with self.mutex:
            if self.done:
                return
            cid = self.running.pop(work_id, None)
            if cid is None:
                cid = self._unpaired(work_id)
                if cid is None:
                    return
            self.release(cid)
            if exit_pid is not None:
                # This task ran on process exit_pid, which now exits: pair it with cid (the
                # id just released) so the exiting process leaves idle, its task returned.
                exiting = self.workers.get(exit_pid)
                if exiting is not None and exiting != cid:
                    for pid, paired in self.workers.items():
                        if paired == cid:
                            self.workers[pid] = exiting
                            break
                    self.workers[exit_pid] = cid
                    # ``exiting`` stays as busy as it was; only the process pairing moved.
                self.workers.pop(exit_pid, None)
                self.evict(cid, "max_lifetime")
                return
            self._worker_free(cid)

    def _unpaired(self, work_id: int) -> int | None:
        # Mutex held. A result of a task still deferred: a worker ran it, so one is free in
        # fact (invariants 2-3 make this unreachable; kept so counts stay exact regardless).
        for i, (wid, t0) in enumerate(self.deferred):
            if wid == work_id:
                del self.deferred[i]
                if not self.free:
                    self.ledger.error("other", "wait", "a task's worker was not seen")
                    return None
                cid = self.free.popleft()
                self.borrow(cid, t0, queued=True)
                return cid
        return None

    def broke(self, futures: list[Any]) -> None:
        """The pool broke: waiting tasks end with it, every worker is evicted ``broken``."""
        with self.mutex:
            if self.done:
                return
            message = "the process pool broke (BrokenProcessPool)"
            for _ in self.deferred:
                self.ledger.error("pool_closed", "wait", message)
            self.deferred.clear()
            for future in futures:
                tag = pop_attr(future, TASK_ATTR)
                if tag is not None and tag[0] is self:
                    self.ledger.error("pool_closed", "wait", message)
            self._end("broken")

    def finish(self) -> None:
        """The management thread ended: the remaining workers exited; the pool is closed."""
        with self.mutex:
            if not self.done:
                self._end("pool_closed")

    def _end(self, reason: str) -> None:
        # Mutex held.
        self.done = True
        for cid in self.workers.values():
            self.evict(cid, reason)
        self.workers.clear()
        self.free.clear()
        self.running.clear()
        self.ledger.close()


def worker_identity(name: str) -> PoolIdentity:
    """The identity of an executor (thread or process pool): a pool of workers (spec 1.1)."""
    return PoolIdentity(
        name=name,
        system="generic",
        library="concurrent.futures",
        library_version=platform.python_version(),
        resource="worker",
    )


def executor_limits(executor: Any) -> tuple[int | None, int | None, int | None]:
    """``(max, min, idle_max)`` of either executor: ``max_workers``, nothing else."""
    return int(executor._max_workers), None, None


def _identity(executor: Any) -> PoolIdentity:
    return worker_identity(f"processes://ProcessPoolExecutor-{next(_names)}")


def _idle(executor: Any) -> list[tuple[Any, float]]:
    # Processes already running (an executor first seen after it started): adopted, ages unknown.
    return [(p, 0.0) for p in tuple((executor._processes or {}).values())]


def make_state() -> TrackingState:
    return TrackingState(
        "futures",
        identity=_identity,
        limits=executor_limits,
        idle=_idle,
        tracker_class=ProcessTracker,
    )


def patch(st: TrackingState, process_mod: Any) -> None:
    wrap = st.patches.wrap
    executor = process_mod.ProcessPoolExecutor
    manager = process_mod._ExecutorManagerThread
    wrap(executor, "submit", lambda orig: submit_hook(orig, st, _tracker_of, _tls))
    wrap(executor, "_spawn_process", lambda orig: _spawn(orig, st))
    wrap(executor, "shutdown", lambda orig: _shutdown(orig, st))
    wrap(process_mod._WorkItem, "__init__", lambda orig: item_init_hook(orig, st, _tls))
    wrap(process_mod._CallItem, "__init__", lambda orig: _call_init(orig, st))
    wrap(manager, "run", lambda orig: _run(orig, st))
    wrap(manager, "add_call_item_to_queue", lambda orig: _add_calls(orig, st))
    wrap(manager, "process_result_item", lambda orig: _result(orig, st))
    wrap(manager, "terminate_broken", lambda orig: _broken(orig, st))
    wrap(process_mod._SafeQueue, "_on_queue_feeder_error", lambda orig: _feeder_error(orig, st))


# ---------------------------------------------------------------------------------- wrappers


def executor_tracker(executor: Any, st: TrackingState, kind: type[_T]) -> _T | None:
    """The executor's tracker if it is a ``kind`` (registered on first sight), else None."""
    tracker = getattr(executor, TRACKER_ATTR, None)
    if tracker is None:
        tracker = st.track(executor)
    return tracker if isinstance(tracker, kind) else None


def _tracker_of(executor: Any, st: TrackingState) -> ProcessTracker | None:
    first_sight = getattr(executor, TRACKER_ATTR, None) is None
    tracker = executor_tracker(executor, st, ProcessTracker)
    if first_sight and tracker is not None:
        _tag_queue(executor, tracker)
    return tracker


def _tag_queue(executor: Any, tracker: ProcessTracker) -> None:
    """Let the call queue's feeder thread find the tracker (``_on_queue_feeder_error``)."""
    queue = getattr(executor, "_call_queue", None)
    if queue is not None:
        setattr(queue, TRACKER_ATTR, tracker)


def _manager_tracker(manager: Any) -> ProcessTracker | None:
    """The tracker of a management thread's executor, cached on the thread object."""
    tracker = getattr(manager, TRACKER_ATTR, None)
    if tracker is None:
        executor = manager.executor_reference()
        tracker = getattr(executor, TRACKER_ATTR, None) if executor is not None else None
        del executor  # the thread must not keep its executor alive (CPython's weakref design)
        if isinstance(tracker, ProcessTracker):
            setattr(manager, TRACKER_ATTR, tracker)
    return tracker if isinstance(tracker, ProcessTracker) else None


# The submit side is the same for thread and process pools (futures.py uses these two too):
# submit() marks its thread with the executor's tracker, and the _WorkItem it builds records
# the wait. Each module passes its own thread-local and tracker lookup.


def submit_hook(
    original: Fn,
    st: TrackingState,
    tracker_of: Callable[[Any, TrackingState], PoolTracker | None],
    tls: threading.local,
) -> Fn:
    """``Executor.submit``: the executor's tracker in ``tls.submitting`` while it runs."""

    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        tracker = tracker_of(self, st)
        if tracker is None:
            return original(self, fn, *args, **kwargs)
        tls.submitting = tracker
        try:
            return original(self, fn, *args, **kwargs)
        finally:
            tls.submitting = None

    return submit


def item_init_hook(original: Fn, st: TrackingState, tls: threading.local) -> Fn:
    """``_WorkItem.__init__``: the task's wait, tagged on its future (``TASK_ATTR``)."""

    def __init__(self: Any, future: Any, fn: Any, args: Any, kwargs: Any) -> None:
        original(self, future, fn, args, kwargs)
        tracker: Any = getattr(tls, "submitting", None)  # a WorkerTracker or a ProcessTracker
        if tracker is None:
            return
        tls.submitting = None  # one work item per submit()
        try:
            # The tag before the wait, both before submit() queues the item: no worker (thread
            # pools) and no management thread (process pools) can see it before this
            # constructor returns.
            setattr(future, TASK_ATTR, (tracker, tracker.now()))
            tracker.wait()
        except Exception as exc:
            st.absorb(exc)

    return __init__


def _spawn(original: Fn, st: TrackingState) -> Fn:
    def _spawn_process(self: Any) -> None:
        tracker = getattr(self, TRACKER_ATTR, None)
        if not isinstance(tracker, ProcessTracker):
            original(self)
            return None
        spawned: list[bool] = []

        def run_original(executor: Any) -> None:
            original(executor)
            spawned.append(True)

        try:
            tracker.spawn(run_original, self)
        except Exception as exc:
            if not spawned:
                raise  # the spawn itself failed: the executor's error, unchanged
            st.absorb(exc)
        return None

    return _spawn_process


def _run(original: Fn, st: TrackingState) -> Fn:
    def run(self: Any) -> None:
        tracker = _manager_tracker(self)
        try:
            original(self)
        finally:
            if tracker is not None:
                try:
                    tracker.finish()
                except Exception as exc:
                    st.absorb(exc)

    return run


def _add_calls(original: Fn, st: TrackingState) -> Fn:
    def add_call_item_to_queue(self: Any) -> None:
        _tls.manager = self
        try:
            original(self)
        finally:
            _tls.manager = None

    return add_call_item_to_queue


def _call_init(original: Fn, st: TrackingState) -> Fn:
    def __init__(self: Any, work_id: int, fn: Any, args: Any, kwargs: Any) -> None:
        original(self, work_id, fn, args, kwargs)
        manager = getattr(_tls, "manager", None)
        if manager is None:
            return
        try:
            # Built only after set_running_or_notify_cancel() succeeded: the task has started
            # from the parent's point of view (it cannot be cancelled any more).
            item = manager.pending_work_items.get(work_id)
            tag = pop_attr(item.future, TASK_ATTR) if item is not None else None
            if tag is not None:
                tracker, t0 = tag
                if isinstance(tracker, ProcessTracker):
                    tracker.started(work_id, t0)
        except Exception as exc:
            st.absorb(exc)

    return __init__


def _result(original: Fn, st: TrackingState) -> Fn:
    def process_result_item(self: Any, result_item: Any) -> None:
        tracker = _manager_tracker(self)
        if tracker is None:
            original(self, result_item)
        elif isinstance(result_item, int):
            original(self, result_item)  # a worker's pid: it exited at shutdown
            try:
                tracker.worker_exited(result_item, "pool_closed")
            except Exception as exc:
                st.absorb(exc)
        else:
            try:
                # Before the original sets the future's result: a caller that saw result()
                # sees the return counted.
                tracker.finished(result_item.work_id, getattr(result_item, "exit_pid", None))
            except Exception as exc:
                st.absorb(exc)
            original(self, result_item)

    return process_result_item


def _broken(original: Fn, st: TrackingState) -> Fn:
    def terminate_broken(self: Any, cause: Any) -> None:
        tracker = _manager_tracker(self)
        futures = [w.future for w in tuple(self.pending_work_items.values())]
        original(self, cause)
        if tracker is not None:
            try:
                tracker.broke(futures)
            except Exception as exc:
                st.absorb(exc)

    return terminate_broken


def _feeder_error(original: Fn, st: TrackingState) -> Fn:
    def _on_queue_feeder_error(self: Any, e: Any, obj: Any) -> None:
        work_id = getattr(obj, "work_id", None)
        if work_id is not None and obj.__class__.__name__ == "_CallItem":
            item = self.pending_work_items.get(work_id)
            tracker = getattr(self, TRACKER_ATTR, None)
            if item is not None and isinstance(tracker, ProcessTracker):
                try:
                    tracker.finished(work_id)  # never reached a worker: the worker is free
                except Exception as exc:
                    st.absorb(exc)
        original(self, e, obj)

    return _on_queue_feeder_error


def _shutdown(original: Fn, st: TrackingState) -> Fn:
    def shutdown(
        self: Any,
        wait: bool = True,  # noqa: FBT001, FBT002 (Executor.shutdown's own signature)
        *,
        cancel_futures: bool = False,
    ) -> None:
        tracker = getattr(self, TRACKER_ATTR, None)
        manager = self._executor_manager_thread
        original(self, wait, cancel_futures=cancel_futures)
        if isinstance(tracker, ProcessTracker) and wait and manager is not None:
            # Joined: normally run() recorded the close; not for a management thread that
            # started before instrument() (its run() is the original).
            try:
                tracker.finish()
            except Exception as exc:
                st.absorb(exc)

    return shutdown
