"""Shim for ``concurrent.futures``: ``ThreadPoolExecutor`` (and so asyncio's default executor)
and ``ProcessPoolExecutor`` (its hook points: :mod:`poolmon.shims._futures_process`).

A thread pool is a pool whose resources are **workers** and whose callers are **tasks** (spec
1.1, section 13.1, ``pool.resource`` = ``worker``):

* a worker thread starting is a ``create`` (its duration: the thread's initializer, if any; an
  initializer that raises is a failed create), its exit an ``evict`` (``pool_closed``);
* ``submit()`` is a ``wait``: the pending count is the queue depth;
* a worker starting the task is a queued ``borrow`` of that worker (its duration: submit to
  start), the task finishing a ``return`` (its duration: the run time), recorded before the
  future's result is set, so a caller that saw ``result()`` sees the counts too;
* a queued task cancelled (``Future.cancel()``, ``shutdown(cancel_futures=True)``) resolves its
  wait as an ``error`` of type ``cancelled`` in phase ``wait``; tasks drained when a worker's
  initializer breaks the pool resolve as ``pool_closed``;
* ``shutdown()`` is the ``close``, recorded once the last worker has exited (at once with
  ``wait=True``; with ``wait=False`` when the workers finish the queue and leave).

``max`` is ``max_workers``. Pools are named ``threads://PREFIX`` after the executor's
``thread_name_prefix`` (CPython's default ``ThreadPoolExecutor-N``; asyncio's ``asyncio``).

Hook points (CPython 3.10-3.13 ``concurrent/futures/thread.py``, read for this shim):
``ThreadPoolExecutor.submit`` (marks the thread as submitting), ``_WorkItem.__init__`` (the
wait, tagged on the future), ``_WorkItem.run`` (re-stated with the borrow and return around the
call: ``set_running_or_notify_cancel`` decides under the future's lock whether the task starts,
and only the winner of that race, run or cancel, resolves the wait), the module's ``_worker``
(the thread's life), ``_initializer_failed``, ``shutdown`` and ``Future.cancel``. Executors
created before ``instrument()`` are seen at their next submit; their running threads are
adopted (no create) and evicted at ``shutdown(wait=True)``.

Written in pure Python on the ledger API the other shims use (:class:`~poolmon.shims.
_psycopg_common.TrackingState` trackers, :mod:`poolmon.shims._patch`); any failure inside poolmon is
absorbed and counted in ``poolmon_shim_errors_total``, never raised into the executor.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable
from typing import Any, Final

from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry
from poolmon.shims import _futures_process
from poolmon.shims._attrs import pop_attr
from poolmon.shims._psycopg_common import CONN_ATTR, TRACKER_ATTR, PoolTracker, TrackingState

__all__ = [
    "LIBRARY",
    "SUPPORTED",
    "WorkerTracker",
    "available",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

#: The standard library; gated on the interpreter's version (the hook points were read there).
LIBRARY: Final = "python"
SUPPORTED: Final = ">=3.10,<3.14"

#: Attribute on a future: ``(tracker, submit time)`` while its task waits in the queue.
TASK_ATTR: Final = "_poolmon_task"

Fn = Callable[..., Any]

# Per thread: the tracker of the executor whose submit() this thread is inside (read by the
# _WorkItem constructor that submit() calls; one work item per submit).
_tls = threading.local()


class WorkerTracker(PoolTracker):
    """A thread pool's tracker: the ledger's bound methods plus the worker count for ``close``.

    Invariants (``mutex`` guards both): ``live`` is the number of workers this shim saw start
    and not yet exit; once ``closing`` is set (``shutdown()`` returned) the ``close`` event is
    recorded exactly when ``live`` reaches 0, after every worker's evict.
    """

    __slots__ = ("closing", "live", "mutex", "wait")

    def __init__(self, ledger: PoolLedger, state: TrackingState) -> None:
        super().__init__(ledger, state)
        self.wait = ledger.wait
        self.mutex = threading.Lock()
        self.live = 0
        self.closing = False

    def worker_started(self, thread: Any, t0: float) -> int:
        cid = self.created(thread, t0)
        with self.mutex:
            self.live += 1
        return cid

    def worker_exited(self, thread: Any, cid: int, reason: str) -> None:
        self.discard(thread, cid, reason)
        with self.mutex:
            self.live -= 1
            close = self.closing and self.live <= 0
        if close:
            self.ledger.close()

    def shut_down(self, threads: Any, *, joined: bool) -> None:
        if joined:
            # Adopted threads (running before instrument()) are not counted in ``live``: evict
            # the ones shutdown() has joined, so the pool ends empty.
            for thread in tuple(threads):
                tag = getattr(thread, CONN_ATTR, None)
                if tag is not None and tag.key is self and not thread.is_alive():
                    pop_attr(thread, CONN_ATTR)
                    self.evict(tag.cid, "pool_closed")
        with self.mutex:
            self.closing = True
            close = self.live <= 0
        if close:
            self.ledger.close()


def _identity(executor: Any) -> PoolIdentity:
    prefix = str(getattr(executor, "_thread_name_prefix", "") or "ThreadPoolExecutor")
    return _futures_process.worker_identity(scrub(f"threads://{prefix}")[:512])


def _idle(executor: Any) -> list[tuple[Any, float]]:
    # Threads already running (an executor first seen after it started): adopted, ages unknown.
    return [(thread, 0.0) for thread in tuple(executor._threads)]


_state: Final = TrackingState(
    "futures",
    identity=_identity,
    limits=_futures_process.executor_limits,
    idle=_idle,
    tracker_class=WorkerTracker,
)
#: Process pools: their own state (another tracker class), patched and restored with the threads'.
_process_state: Final = _futures_process.make_state()


def available() -> bool:
    """``concurrent.futures`` is part of the standard library: always importable."""
    return True


def _supported() -> bool:
    from poolmon.shims._version import supported

    return supported(LIBRARY, SUPPORTED, platform.python_version())


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Instrument both executors in place; True if active now (twice changes nothing)."""
    return _state.install(registry, ready=_supported, patch=_patch_both, detach=_detach_both)


def _patch_both() -> None:
    from concurrent.futures import _base
    from concurrent.futures import process as process_mod
    from concurrent.futures import thread as thread_mod

    _process_state.start(_state.registry)
    _patch(_state, thread_mod, _base)
    _futures_process.patch(_process_state, process_mod)


def _detach_both() -> None:
    # The thread pools' patches are restored by _state.uninstall(); the process pools' here.
    _process_state.patches.restore()
    _process_state.forget_pools()
    _state.forget_pools()


def uninstrument() -> None:
    """Restore every patched attribute to its original object and forget the tracked pools."""
    _state.uninstall()


def is_instrumented() -> bool:
    return _state.installed


def _patch(st: TrackingState, thread_mod: Any, base: Any) -> None:
    wrap = st.patches.wrap
    executor = thread_mod.ThreadPoolExecutor
    item = thread_mod._WorkItem
    wrap(executor, "submit", lambda orig: _futures_process.submit_hook(orig, st, _tracker, _tls))
    wrap(item, "__init__", lambda orig: _futures_process.item_init_hook(orig, st, _tls))
    wrap(item, "run", lambda orig: _run(orig, st))
    wrap(thread_mod, "_worker", lambda orig: _worker(orig, st))
    wrap(executor, "_initializer_failed", lambda orig: _initializer_failed(orig, st))
    wrap(executor, "shutdown", lambda orig: _shutdown(orig, st))
    wrap(base.Future, "cancel", lambda orig: _cancel(orig, st))


# ---------------------------------------------------------------------------------- wrappers


def _tracker(executor: Any, st: TrackingState) -> WorkerTracker | None:
    return _futures_process.executor_tracker(executor, st, WorkerTracker)


def _start(tracker: WorkerTracker, t0: float, st: TrackingState) -> int | None:
    try:
        me = threading.current_thread()
        cid = tracker.conn_id(me)  # adopted when it started before instrument()
        tracker.borrow(cid, t0, queued=True)
        return cid
    except Exception as exc:
        st.absorb(exc)
        return None


def _finish(tracker: WorkerTracker, cid: int | None, st: TrackingState) -> None:
    if cid is None:
        return
    try:
        tracker.release(cid)
    except Exception as exc:
        st.absorb(exc)


def _run(original: Fn, st: TrackingState) -> Fn:
    def run(self: Any) -> None:
        future = self.future
        tag = getattr(future, TASK_ATTR, None)
        if tag is None:
            original(self)  # submitted before instrument(), or not through submit()
            return None
        # CPython's _WorkItem.run, with the borrow and the return around the call. Whoever wins
        # the future's state change (this call or a cancel()) resolves the wait, once.
        if not future.set_running_or_notify_cancel():
            return None
        tag = pop_attr(future, TASK_ATTR)
        if tag is None:  # pragma: no cover - only a concurrent run of the same item
            cid = None
            tracker = None
        else:
            tracker = tag[0]
            cid = _start(tracker, tag[1], st)
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:
            if tracker is not None:
                _finish(tracker, cid, st)
            future.set_exception(exc)
            # Break the reference cycle with the exception (as CPython does with ``self``).
            self = None
            future = None
        else:
            if tracker is not None:
                _finish(tracker, cid, st)
            future.set_result(result)
        return None

    return run


def _worker(original: Fn, st: TrackingState) -> Fn:
    def _worker(executor_reference: Any, work_queue: Any, initializer: Any, initargs: Any) -> Any:
        executor = executor_reference()
        tracker = getattr(executor, TRACKER_ATTR, None) if executor is not None else None
        del executor  # the worker must not keep its executor alive (CPython's weakref design)
        if not isinstance(tracker, WorkerTracker):
            return original(executor_reference, work_queue, initializer, initargs)
        me = threading.current_thread()
        started: list[int] = []
        t0 = tracker.now()

        def opened() -> None:
            try:
                started.append(tracker.worker_started(me, t0))
            except Exception as exc:
                st.absorb(exc)

        if initializer is None:
            opened()
            init = None
        else:

            def init(*args: Any) -> None:
                try:
                    initializer(*args)
                except BaseException as exc:
                    try:
                        tracker.ledger.create_failed(t0, exc)
                    except Exception as inner:
                        st.absorb(inner)
                    raise
                opened()

        try:
            return original(executor_reference, work_queue, init, initargs)
        finally:
            if started:
                try:
                    tracker.worker_exited(me, started[0], "pool_closed")
                except Exception as exc:
                    st.absorb(exc)

    return _worker


def _initializer_failed(original: Fn, st: TrackingState) -> Fn:
    def _initializer_failed(self: Any) -> None:
        original(self)
        tracker = getattr(self, TRACKER_ATTR, None)
        if not isinstance(tracker, WorkerTracker):
            return
        try:
            # CPython drained every queued task and failed its future: those waits end with
            # the pool (broken, unusable). Submits fail from now on, so nothing new can queue.
            for _ in range(tracker.ledger.snapshot().pending):
                tracker.ledger.error(
                    "pool_closed", "wait", "the thread pool broke (an initializer failed)"
                )
        except Exception as exc:
            st.absorb(exc)

    return _initializer_failed


def _shutdown(original: Fn, st: TrackingState) -> Fn:
    def shutdown(
        self: Any,
        wait: bool = True,  # noqa: FBT001, FBT002 (Executor.shutdown's own signature)
        *,
        cancel_futures: bool = False,
    ) -> None:
        original(self, wait, cancel_futures=cancel_futures)
        tracker = getattr(self, TRACKER_ATTR, None)
        if isinstance(tracker, WorkerTracker):
            try:
                tracker.shut_down(self._threads, joined=bool(wait))
            except Exception as exc:
                st.absorb(exc)

    return shutdown


def _cancel(original: Fn, st: TrackingState) -> Fn:
    def cancel(self: Any) -> bool:
        ok: bool = original(self)
        if ok and getattr(self, TASK_ATTR, None) is not None:
            # Cancelled while queued: the task never starts (its run() sees the cancel).
            tag = pop_attr(self, TASK_ATTR)
            if tag is not None:
                tracker, t0 = tag
                try:
                    tracker.ledger.error(
                        "cancelled",
                        "wait",
                        "task cancelled before it started",
                        duration=max(0.0, tracker.now() - t0),
                    )
                except Exception as exc:
                    st.absorb(exc)
        return ok

    return cancel
