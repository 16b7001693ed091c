"""The per-pool ledger: live state plus aggregates, updated by events in O(1).

Every pool poolmon knows, its own or a shimmed library's, has one ledger. Pools (or shims) call the
event methods (:meth:`create`, :meth:`borrow`, :meth:`release`, ...) at the moment things happen;
exporters and ``poolmon top`` call :meth:`snapshot` when they collect.

Hot-path design (numbers from DESIGN.md section 2, Python 3.11):

* Borrow and return take the lock-free :mod:`~poolmon.core.lane` while nothing but counting is
  asked (no subscriber, stack sampling or leak bookkeeping): single atomic operations on a dict
  and two lists, folded into the histograms under the lock at collection time. Shims inline the
  lane's operations; :meth:`borrow` and :meth:`release` use it too.
* One lock per ledger. Every other event method takes it exactly once. Without it,
  ``counts[i] += 1`` is a read-modify-write that loses updates when the GIL switches threads
  mid-way, and the standard promises exact counters. An uncontended ``with lock`` costs ~0.05 us.
* Clock reads happen outside the lock; a borrow+return cycle reads the clock twice (plus once for
  ``t0`` when the caller measures a wait).
* Histograms are preallocated lists of bucket counts indexed with ``bisect_left`` on the catalog's
  fixed bounds (``le`` semantics); no objects are allocated per event.
* :class:`~poolmon.core.events.PoolEvent` objects are built only when a subscriber is attached.

Live state is two dicts: ``_alive`` (conn id -> creation time) and ``_borrowed`` (conn id -> borrow
time). ``used`` is ``len(_borrowed)`` and ``idle`` is ``len(_alive) - used``, so the two can never
drift apart. Because dicts keep insertion order and a return deletes the key, the first entry of
``_borrowed`` is always the oldest outstanding borrow: the leak signal is O(1).

Memory is bounded by the number of live connections, never by the number of events.

Multiplexed connections (spec 1.1, section 15: an HTTP/2 connection lent to several callers at
once, up to its stream limit) are the one addition, kept off the lane: a connection made with
``create(t0, max_streams=N)`` (or declared with :meth:`set_max_streams`) is borrowed and returned
per stream with :meth:`borrow_stream` / :meth:`release_stream`, always on the locked path.
``_streams`` (conn -> streams in use) and ``_stream_caps`` (conn -> limit) hold only multiplexed
connections; such a connection is in ``_borrowed`` (so ``used``) while at least one of its streams
is in use, so ``used``/``idle`` keep counting connections. Non-multiplexed connections and the lane
protocol are untouched: nothing on their path reads the two dicts.

Subscribers are called synchronously, under the lock, in event order. That keeps a JSONL stream's
per-connection order identical to what happened, at the cost that a slow subscriber slows the pool:
subscribers must be quick and must never call back into the pool.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import traceback
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from poolmon.core import events as ev
from poolmon.core.catalog import BUCKETS, ERROR_TYPES, EVICTION_REASONS
from poolmon.core.clock import Clock, system_clock
from poolmon.core.compiled import new_lane
from poolmon.core.events import PoolEvent
from poolmon.core.identity import PoolIdentity
from poolmon.core.lane import LaneProtocol
from poolmon.core.redact import scrub
from poolmon.core.selfmetrics import SelfMetrics, log_once
from poolmon.core.snapshot import HistogramSnapshot, LeakRecord, PoolSnapshot

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PoolLedger", "Subscriber"]

_log = logging.getLogger("poolmon")

Subscriber = Callable[[PoolEvent], None]

_WAIT_BOUNDS: Final = BUCKETS["wait_time"]
_CREATE_BOUNDS: Final = BUCKETS["create_time"]
_USE_BOUNDS: Final = BUCKETS["use_time"]
_LIFE_BOUNDS: Final = BUCKETS["lifetime"]
_EVICTION_REASONS: Final = frozenset(EVICTION_REASONS)
_ERROR_TYPES: Final = frozenset(ERROR_TYPES)
_STACK_LIMIT: Final = 24


def _describe(error: BaseException | str | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error
    return scrub(text)


class PoolLedger:
    """Live state and aggregates of one pool. Thread-safe; every method is O(1) unless noted.

    Connection ids are ints the ledger hands out from :meth:`create` (or that a caller supplies to
    :meth:`adopt`); they are unique within the pool and never reused, unlike ``id()``.
    """

    __slots__ = (
        "__weakref__",
        "_acquire",
        "_alive",
        "_borrow_count",
        "_borrowed",
        "_clock",
        "_closed",
        "_create_err_counts",
        "_create_err_sum",
        "_create_ok_counts",
        "_create_ok_sum",
        "_errors",
        "_evictions",
        "_extras",
        "_flagged",
        "_ids",
        "_life_counts",
        "_life_sum",
        "_lock",
        "_now",
        "_pending",
        "_release",
        "_resolved_at_close",
        "_retire_reason",
        "_self_metrics",
        "_stack_every",
        "_stacks",
        "_stream_caps",
        "_streams",
        "_subscribers",
        "_use_counts",
        "_use_sum",
        "_validations",
        "_wait_counts",
        "_wait_sum",
        "annotation",
        "identity",
        "idle_max",
        "lane",
        "max_size",
        "min_size",
        "multiplexed",
        "open_fields",
        "optional_source",
        "protocol_version",
        "semconv_exported_by",
    )

    def __init__(
        self,
        identity: PoolIdentity,
        *,
        max_size: int | None = None,
        min_size: int | None = None,
        idle_max: int | None = None,
        clock: Clock = system_clock,
        self_metrics: SelfMetrics | None = None,
        stack_sample_every: int = 0,
        open_fields: Mapping[str, Any] | None = None,
    ) -> None:
        self.identity = identity
        #: Spec 1.1 fields of this pool's ``open`` event (``burst_max``, ``route``...).
        self.open_fields: dict[str, Any] = dict(open_fields or {})
        #: Spec 1.1 fields (``tenant``, ``priority``, ``burst``) a pool adds to the events it is
        #: about to record: set and cleared by the pool around the ledger call, under the pool's
        #: own lock. Read only when an event object is built (a subscriber is attached).
        self.annotation: dict[str, Any] | None = None
        #: Set by a pool with spec 1.1 features: returns its optional metrics' points (read
        #: at snapshot time, outside this ledger's lock; a failure is counted, never raised).
        self.optional_source: Callable[[], Mapping[str, Any]] | None = None
        #: Set by a shim when the pooled library itself already publishes this pool's official
        #: OpenTelemetry semantic-convention series (e.g. ``"redis-py"``): an exporter in
        #: ``semconv`` mode then keeps poolmon's own names for it rather than count it twice.
        self.semconv_exported_by: str | None = None
        #: Set by a shim once its connections negotiated a protocol (HTTP: "1.1" or "2"); exported
        #: as ``network.protocol.version`` under the HTTP semantic conventions.
        self.protocol_version: str | None = None
        #: True once the pool has had a multiplexed connection (its stream gauges exist from then).
        self.multiplexed = False
        self.max_size = max_size
        self.min_size = min_size
        self.idle_max = idle_max
        self._clock = clock
        self._now = clock.monotonic
        self._set_lock(threading.Lock())
        self._self_metrics = self_metrics if self_metrics is not None else SelfMetrics()
        self._subscribers: tuple[Subscriber, ...] = ()
        if stack_sample_every < 0:
            raise ValueError(f"stack_sample_every must be >= 0, got {stack_sample_every!r}")
        self._stack_every = stack_sample_every
        self._ids = itertools.count(1)
        self._borrow_count = 0
        self._reset_state()

    def _set_lock(self, lock: threading.Lock) -> None:
        # The hot methods call pre-bound acquire/release in try/finally: measured ~0.15 us per
        # event cheaper than ``with self._lock`` on this interpreter, which matters at ~1 us/cycle.
        self._lock = lock
        self._acquire = lock.acquire
        self._release = lock.release

    def _reset_state(self) -> None:
        self._alive: dict[int, float] = {}
        #: The lock-free writers' view of this ledger (see poolmon.core.lane). ``_borrowed`` is
        #: the lane's dict itself: lane writers and the locked methods share one live state.
        # Compiled where built (poolmon.core.compiled); it buckets with the ledger's own bounds.
        self.lane: LaneProtocol = new_lane(self._now, _WAIT_BOUNDS, _USE_BOUNDS)
        self._borrowed: dict[int, float] = self.lane.borrowed
        self._stacks: dict[int, str] = {}
        self._streams: dict[int, int] = {}
        self._stream_caps: dict[int, int] = {}
        self._flagged: set[int] = set()
        self._pending = 0
        #: Waits the close resolved whose callers have not reported their error yet.
        self._resolved_at_close = 0
        self._closed = False
        self._retire_reason: str | None = None
        self._reset_aggregates()
        self._update_extras()

    def _update_extras(self) -> None:
        # ``_extras`` is the one flag borrow/release test before doing any optional work
        # (subscribers, stack sampling, leak bookkeeping). It may stay True after that work has
        # gone (the slow branch then finds nothing to do); it must never be False while any is due.
        self._extras = bool(self._subscribers or self._stack_every or self._stacks or self._flagged)
        self.lane.open = not self._extras

    def _reset_aggregates(self) -> None:
        self._wait_counts = [0] * (len(_WAIT_BOUNDS) + 1)
        self._wait_sum = 0.0
        self._use_counts = [0] * (len(_USE_BOUNDS) + 1)
        self._use_sum = 0.0
        self._life_counts = [0] * (len(_LIFE_BOUNDS) + 1)
        self._life_sum = 0.0
        self._create_ok_counts = [0] * (len(_CREATE_BOUNDS) + 1)
        self._create_ok_sum = 0.0
        self._create_err_counts = [0] * (len(_CREATE_BOUNDS) + 1)
        self._create_err_sum = 0.0
        # Every label value exists at zero from the start: rate() needs the series before the
        # first increment, and a dashboard must not show "no data" for a healthy pool.
        self._evictions = dict.fromkeys(EVICTION_REASONS, 0)
        self._errors = dict.fromkeys(ERROR_TYPES, 0)
        self._validations = {"ok": 0, "error": 0}

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def now(self) -> Callable[[], float]:
        """The monotonic clock function; callers read ``t0 = ledger.now()`` before a borrow."""
        return self._now

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def self_metrics(self) -> SelfMetrics:
        return self._self_metrics

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call ``subscriber(event)`` for every later event (copy-on-write; O(subscribers))."""
        with self._lock:
            if subscriber not in self._subscribers:
                self._subscribers = (*self._subscribers, subscriber)
                self._update_extras()
                if not self._closed:
                    # Only the new subscriber sees this open: subscribers already attached have
                    # had theirs, and a second open would restart their stream's state machine.
                    self._emit_open(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            # Equality, not identity, as subscribe() tests it: ``obj.method`` is a new bound
            # method object at every access, but equal to the one subscribed.
            self._subscribers = tuple(s for s in self._subscribers if s != subscriber)
            self._update_extras()

    def _emit_open(self, subscriber: Subscriber) -> None:
        # ``pending`` tells a late subscriber how many callers already wait, so that the waits
        # it sees resolve against the right count (the standard's pending-mismatch rule).
        ident = self.identity
        event = PoolEvent(
            ev.OPEN,
            self._clock.wall(),
            ident.name,
            ident.pid,
            system=ident.system,
            resource=None if ident.resource == "connection" else ident.resource,
            server_address=ident.server_address,
            server_port=ident.server_port,
            namespace=ident.namespace,
            library=ident.library,
            library_version=ident.library_version,
            max=self.max_size,
            min=self.min_size,
            idle_max=self.idle_max,
            shared_max=ident.shared_max,
            pending=self._pending,
            **self.open_fields,
        )
        self._deliver(subscriber, event)

    def _emit(self, kind: str, **fields: Any) -> None:
        # Called with the lock held, so every subscriber sees events in the order they happened.
        if self.annotation:
            fields = {**self.annotation, **fields}
        event = PoolEvent(kind, self._clock.wall(), self.identity.name, self.identity.pid, **fields)
        for subscriber in self._subscribers:
            self._deliver(subscriber, event)

    def _deliver(self, subscriber: Subscriber, event: PoolEvent) -> None:
        # A subscriber that raises is isolated: counted, logged once, never propagated into the
        # pool operation that triggered it.
        try:
            subscriber(event)
        except Exception as exc:
            label = getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
            self._self_metrics.inc("poolmon.subscriber.errors", label)
            log_once(
                _log,
                f"subscriber:{label}",
                "poolmon: event subscriber %s raised %s; further failures are only counted "
                "in poolmon_subscriber_errors_total",
                label,
                _describe(exc),
            )

    # ------------------------------------------------------------------ events: the hot path

    def create(self, t0: float, conn: int | None = None, *, max_streams: int | None = None) -> int:
        """A physical connection was opened; ``t0`` is when opening started. Returns its new id.

        ``conn`` is an id the pool assigned itself (``poolmon.api`` trackers number their own
        resources); then the pool, not this ledger, keeps ids unique. Omitted: the ledger's next.
        ``max_streams``: the connection is multiplexed with this stream limit (spec 1.1, section
        15); borrow and return it with :meth:`borrow_stream` / :meth:`release_stream`.
        """
        now = self._now()
        duration = now - t0
        with self._lock:
            if conn is None:
                conn = next(self._ids)
            self._alive[conn] = now
            self._create_ok_counts[bisect_left(_CREATE_BOUNDS, duration)] += 1
            self._create_ok_sum += duration
            if max_streams is not None:
                self._declare_streams(conn, max_streams)
            if self._subscribers:
                self._emit(
                    ev.CREATE, conn=conn, duration=duration, outcome="ok", max_streams=max_streams
                )
        return conn

    def create_failed(self, t0: float, error: BaseException | str | None = None) -> None:
        """Opening a connection failed (counts as an error of type ``create_failed``)."""
        duration = self._now() - t0
        with self._lock:
            self._create_err_counts[bisect_left(_CREATE_BOUNDS, duration)] += 1
            self._create_err_sum += duration
            self._errors["create_failed"] += 1
            if self._subscribers:
                self._emit(
                    ev.CREATE,
                    duration=duration,
                    outcome="error",
                    error_type="create_failed",
                    message=_describe(error),
                )

    def adopt(self, conn: int | None = None, *, age: float = 0.0) -> int:
        """Start tracking a connection that exists already (opened before instrumentation).

        No create event and no create-time sample: poolmon did not see it open.
        """
        created = self._now() - age
        with self._lock:
            if conn is None:
                conn = next(self._ids)
            self._alive.setdefault(conn, created)
        return conn

    def wait(self) -> int:
        """A caller found no idle connection and queued. Returns the pending count after it.

        Resolve it later with ``borrow(..., queued=True)`` or ``error(..., phase="wait")``.
        """
        with self._lock:
            self._pending += 1
            pending = self._pending
            if self._subscribers:
                self._emit(ev.WAIT, pending=pending)
        return pending

    def borrow(
        self, conn: int, t0: float | None = None, *, queued: bool = False, now: float | None = None
    ) -> None:
        """``conn`` was handed to a caller that started asking at ``t0`` (None: no wait).

        ``now`` is the current reading of this ledger's clock when the caller has just taken one
        (a pool that checked expiry with it): passing it saves a clock read per event.
        """
        if now is None:
            now = self._now()
        lane = self.lane
        # The lane protocol (poolmon.core.lane): L3, only live ids; L2, fold when asked.
        if lane.open and not queued and conn in self._alive:
            if lane.borrow(conn, now, 0.0 if t0 is None else now - t0):
                self.fold()
            return
        self._acquire()
        try:
            self._borrowed[conn] = now
            if conn not in self._alive:
                self._alive[conn] = now
            if t0 is None:
                waited = 0.0
                self._wait_counts[0] += 1  # no wait: the first bucket, and the sum is unchanged
            else:
                waited = now - t0
                if waited > 0.0:
                    self._wait_counts[bisect_left(_WAIT_BOUNDS, waited)] += 1
                    self._wait_sum += waited
                else:
                    waited = 0.0
                    self._wait_counts[0] += 1
            if queued and self._pending:
                self._pending -= 1
            if self._extras:
                self._borrow_extras(conn, waited, queued=queued)
        finally:
            self._release()

    def _borrow_extras(self, conn: int, waited: float, *, queued: bool) -> None:
        # Lock held. Stack sampling and subscribers: off the common path (one flag test there).
        if self._stack_every:
            self._borrow_count += 1
            if self._borrow_count % self._stack_every == 0:
                self._stacks[conn] = "".join(traceback.format_stack(limit=_STACK_LIMIT)[:-2])
        if self._subscribers:
            self._emit(ev.BORROW, conn=conn, duration=waited, queued=queued or None)

    def release(self, conn: int, now: float | None = None) -> None:
        """The caller gave ``conn`` back (the standard's ``return`` event); ``now`` as in
        :meth:`borrow`."""
        if now is None:
            now = self._now()
        lane = self.lane
        if lane.open:
            if lane.release(conn, now):  # the lane protocol (poolmon.core.lane), L1 and L2
                self.fold()
            return
        self._acquire()
        try:
            start = self._borrowed.pop(conn, None)
            if start is None:
                return  # never seen borrowed (borrowed before instrumentation): nothing to time
            used = now - start
            self._use_counts[bisect_left(_USE_BOUNDS, used)] += 1
            self._use_sum += used
            if self._extras:
                self._release_extras(conn, used)
        finally:
            self._release()

    def _release_extras(self, conn: int, used: float) -> None:
        # Lock held.
        if self._stacks or self._flagged:
            if self._stacks:
                self._stacks.pop(conn, None)
            if self._flagged:
                self._flagged.discard(conn)
            if not (self._stacks or self._flagged):
                self._update_extras()  # the last leak came back: reopen the lane if nothing else
        if self._subscribers:
            self._emit(ev.RETURN, conn=conn, duration=used)

    # ------------------------------------------------------------------ multiplexed connections

    def _declare_streams(self, conn: int, max_streams: int) -> None:
        # Lock held.
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams!r}")
        self._stream_caps[conn] = max_streams
        self._streams.setdefault(conn, 0)
        self.multiplexed = True

    def set_max_streams(self, conn: int, max_streams: int) -> None:
        """``conn`` is multiplexed with this stream limit (from now on; the peer may change it).

        The next :meth:`borrow_stream` event carries the new limit (spec 1.1, section 15).
        """
        with self._lock:
            if conn in self._alive:
                self._declare_streams(conn, max_streams)

    def borrow_stream(
        self,
        conn: int,
        t0: float | None = None,
        *,
        queued: bool = False,
        max_streams: int | None = None,
    ) -> float:
        """One stream of multiplexed ``conn`` was handed to a caller (asking since ``t0``).

        ``max_streams``: the connection's stream limit now, when the caller reads it per borrow
        (a peer may change it). Returns the stream's start, to hand back to
        :meth:`release_stream` (use time is per stream). The locked path always: several
        callers share the connection.
        """
        now = self._now()
        waited = 0.0 if t0 is None else max(0.0, now - t0)
        with self._lock:
            if max_streams is not None and self._stream_caps.get(conn) != max_streams:
                self._declare_streams(conn, max_streams)
            if conn not in self._alive:
                self._alive[conn] = now
            streams = self._streams.get(conn, 0) + 1
            self._streams[conn] = streams
            if streams == 1:
                self._borrowed[conn] = now  # used while any stream is
            self._wait_counts[bisect_left(_WAIT_BOUNDS, waited) if waited else 0] += 1
            self._wait_sum += waited
            if queued and self._pending:
                self._pending -= 1
            if self._subscribers:
                self._emit(
                    ev.BORROW,
                    conn=conn,
                    duration=waited,
                    queued=queued or None,
                    streams=streams,
                    max_streams=self._stream_caps.get(conn),
                )
        return now

    def release_stream(self, conn: int, started: float) -> None:
        """A caller ended its stream of multiplexed ``conn`` begun at ``started``."""
        now = self._now()
        with self._lock:
            streams = self._streams.get(conn)
            if not streams:
                return  # not seen borrowed (or evicted meanwhile): nothing to end
            streams -= 1
            self._streams[conn] = streams
            if streams == 0:
                self._borrowed.pop(conn, None)
                if self._flagged or self._stacks:
                    self._stacks.pop(conn, None)
                    self._flagged.discard(conn)
                    self._update_extras()
            used = max(0.0, now - started)
            self._use_counts[bisect_left(_USE_BOUNDS, used)] += 1
            self._use_sum += used
            if self._subscribers:
                self._emit(ev.RETURN, conn=conn, duration=used, streams=streams)

    def streams_of(self, conn: int) -> tuple[int, int | None]:
        """(streams in use, stream limit) of ``conn``; limit None when it is not multiplexed."""
        with self._lock:
            return self._streams.get(conn, 0), self._stream_caps.get(conn)

    def validate(self, conn: int, t0: float, *, ok: bool) -> None:
        """A health check of ``conn`` ran from ``t0``; a failed one must be followed by evict."""
        duration = self._now() - t0
        with self._lock:
            if ok:
                self._validations["ok"] += 1
            else:
                self._validations["error"] += 1
                self._errors["validation_failed"] += 1
            if self._subscribers:
                self._emit(
                    ev.VALIDATE, conn=conn, duration=duration, outcome="ok" if ok else "error"
                )

    def evict(self, conn: int, reason: str) -> None:
        """The pool closed ``conn`` (idle or borrowed) for ``reason`` (a catalog eviction
        reason)."""
        now = self._now()
        if reason not in _EVICTION_REASONS:
            reason = "other"
        with self._lock:
            self._evict_locked(conn, reason, now)

    def _evict_locked(self, conn: int, reason: str, now: float) -> None:
        created = self._alive.pop(conn, None)
        if created is None:
            return  # unknown or already evicted: counting it twice would break exactness
        self._borrowed.pop(conn, None)
        if self._stream_caps:
            self._stream_caps.pop(conn, None)
            self._streams.pop(conn, None)
        if self._stacks:
            self._stacks.pop(conn, None)
        if self._flagged:
            self._flagged.discard(conn)
        age = now - created
        self._evictions[reason] += 1
        self._life_counts[bisect_left(_LIFE_BOUNDS, age)] += 1
        self._life_sum += age
        if self._subscribers:
            self._emit(ev.EVICT, conn=conn, reason=reason, age=age)

    def retire(self, reason: str = "pool_closed") -> None:
        """The pool object itself is gone: evict every live connection for ``reason``, then close.

        Meant for garbage-collection callbacks (``weakref.finalize`` on a library pool). Those can
        run on a thread that is *inside* this ledger's lock at that moment (collection starts on
        any allocation), and the lock is not reentrant: waiting for it would deadlock. So this
        never waits: it records the request and does the work now if the lock is free, otherwise
        the lock's next holder does it (the next :meth:`snapshot` at the latest).
        """
        if reason not in _EVICTION_REASONS:
            reason = "other"
        self._retire_reason = reason  # a plain attribute store: atomic, safe from any context
        if self._acquire(blocking=False):
            try:
                self._apply_retire()
            finally:
                self._release()

    def _apply_retire(self) -> None:
        # Lock held.
        reason = self._retire_reason
        if reason is None:
            return
        self._retire_reason = None
        now = self._now()
        for conn in list(self._alive):
            self._evict_locked(conn, reason, now)
        if not self._closed:
            self._closed = True
            if self._subscribers:
                self._emit(ev.CLOSE)

    def error(
        self,
        error_type: str,
        phase: str,
        error: BaseException | str | None = None,
        *,
        conn: int | None = None,
        duration: float | None = None,
    ) -> None:
        """Something failed. An error in phase ``wait`` resolves one pending wait (a timeout,
        a cancelled waiter, a pool closed under a waiter)."""
        if error_type not in _ERROR_TYPES:
            error_type = "other"
        with self._lock:
            if phase == "wait" and not self._pending and self._resolved_at_close:
                # This caller's wait was already resolved, and counted, by close(): once only.
                self._resolved_at_close -= 1
                return
            self._errors[error_type] += 1
            if phase == "wait" and self._pending:
                self._pending -= 1
            if self._subscribers:
                self._emit(
                    ev.ERROR,
                    error_type=error_type,
                    phase=phase,
                    conn=conn,
                    duration=duration,
                    message=_describe(error),
                )

    def timeout(self, t0: float, error: BaseException | str | None = None) -> None:
        """A queued caller gave up after waiting since ``t0`` (error type ``timeout``)."""
        self.error("timeout", "wait", error, duration=max(0.0, self._now() - t0))

    def close(self) -> None:
        """The pool is closed. Evict its connections (reason ``pool_closed``) before calling
        this."""
        with self._lock:
            if self._closed:
                return
            # Every wait ends before the close (spec 1.1, rule pending-unresolved). A caller
            # still queued now is failed by the pool's close, but its own report may come
            # later, from its thread: its wait is resolved here as pool_closed, counted once,
            # and that late report is then taken as already counted (error()).
            for _ in range(self._pending):
                self._errors["pool_closed"] += 1
                if self._subscribers:
                    self._emit(
                        ev.ERROR,
                        error_type="pool_closed",
                        phase="wait",
                        message="the pool closed while the caller waited",
                    )
            self._resolved_at_close += self._pending
            self._pending = 0
            self._closed = True
            if self._subscribers:
                self._emit(ev.CLOSE)

    def set_limits(
        self,
        *,
        max_size: int | None = None,
        min_size: int | None = None,
        idle_max: int | None = None,
    ) -> None:
        """Update the configured limits (exported as gauges)."""
        with self._lock:
            self.max_size = max_size
            self.min_size = min_size
            self.idle_max = idle_max

    # ------------------------------------------------------------------ folding the lane

    def fold(self) -> None:
        """Move the lane's pending samples into the histograms (snapshots do this themselves)."""
        with self._lock:
            self._fold_locked()

    def _fold_locked(self) -> None:
        # Lock held: the only place lane samples meet the bucket counts (read-modify-write).
        wait_sum, use_sum = self.lane.drain(self._wait_counts, self._use_counts)
        self._wait_sum += wait_sum
        self._use_sum += use_sum

    # ------------------------------------------------------------------ leaks

    def leaks(self, threshold: float) -> list[LeakRecord]:
        """Outstanding borrows older than ``threshold`` seconds, oldest first. O(leaks)."""
        now = self._now()
        out: list[LeakRecord] = []
        with self._lock:
            # A copy (one atomic call): lane writers change the dict's size without the lock.
            for conn, start in self._borrowed.copy().items():
                age = now - start
                if age < threshold:
                    break  # insertion order is borrow order: everything after is younger
                out.append(LeakRecord(conn, age, self._stacks.get(conn)))
        return out

    def check_leaks(self, threshold: float) -> list[LeakRecord]:
        """Like :meth:`leaks`, and report each leak once as an error of type ``leak_suspected``."""
        found = self.leaks(threshold)
        for leak in found:
            with self._lock:
                if leak.conn in self._flagged or leak.conn not in self._borrowed:
                    continue
                self._flagged.add(leak.conn)
                self._update_extras()
                self._errors["leak_suspected"] += 1
                if self._subscribers:
                    self._emit(
                        ev.ERROR,
                        error_type="leak_suspected",
                        phase="borrow",
                        conn=leak.conn,
                        duration=leak.age,
                        message=f"connection {leak.conn} borrowed {leak.age:.3f}s ago, "
                        f"over the leak threshold of {threshold:g}s",
                        stack=leak.stack,
                    )
        return found

    # ------------------------------------------------------------------ reading

    def snapshot(self, leak_threshold: float | None = None) -> PoolSnapshot:
        """An immutable copy of the current state. O(buckets + reasons)."""
        now = self._now()
        wall = self._clock.wall()
        with self._lock:
            if self._retire_reason is not None:
                self._apply_retire()
            self._fold_locked()
            # A copy (one atomic call): lane writers may change the dict while we read it.
            borrowed = self._borrowed.copy()
            used = len(borrowed)
            idle = len(self._alive) - used
            oldest = 0.0
            if borrowed:
                oldest = max(0.0, now - next(iter(borrowed.values())))
            snap = PoolSnapshot(
                identity=self.identity,
                taken_at=wall,
                idle=max(idle, 0),
                used=used,
                pending=self._pending,
                max=self.max_size,
                min=self.min_size,
                idle_max=self.idle_max,
                wait_time=HistogramSnapshot(_WAIT_BOUNDS, tuple(self._wait_counts), self._wait_sum),
                use_time=HistogramSnapshot(_USE_BOUNDS, tuple(self._use_counts), self._use_sum),
                lifetime=HistogramSnapshot(_LIFE_BOUNDS, tuple(self._life_counts), self._life_sum),
                create_time={
                    "ok": HistogramSnapshot(
                        _CREATE_BOUNDS, tuple(self._create_ok_counts), self._create_ok_sum
                    ),
                    "error": HistogramSnapshot(
                        _CREATE_BOUNDS, tuple(self._create_err_counts), self._create_err_sum
                    ),
                },
                evictions=dict(self._evictions),
                errors=dict(self._errors),
                validations=dict(self._validations),
                oldest_use=oldest,
                closed=self._closed,
                semconv_exported_by=self.semconv_exported_by,
                streams_used=sum(self._streams.values()),
                streams_max=sum(self._stream_caps.values()) if self.multiplexed else None,
                protocol_version=self.protocol_version,
            )
        if leak_threshold is not None:
            leaks = tuple(self.leaks(leak_threshold))
            snap = _with_leaks(snap, leaks)
        source = self.optional_source
        if source is not None:
            snap = self._with_optional(snap, source)
        return snap

    def _with_optional(self, snap: PoolSnapshot, source: Callable[[], Any]) -> PoolSnapshot:
        from dataclasses import replace

        try:
            points = {name: tuple(rows) for name, rows in source().items()}
        except Exception as exc:
            self._self_metrics.inc("poolmon.shim.errors", "optional-metrics")
            log_once(_log, f"optional:{self.name}", "poolmon: %s", _describe(exc))
            return snap
        return replace(snap, optional=points)

    def connections(self) -> dict[str, list[int]]:
        """Ids of live connections by state (for tests and detail views). O(connections)."""
        with self._lock:
            borrowed = self._borrowed.copy()
            used = list(borrowed)
            idle = [c for c in self._alive if c not in borrowed]
        return {"idle": idle, "used": used}

    # ------------------------------------------------------------------ process lifecycle

    def after_fork_in_child(self) -> None:
        """Called by the registry in a forked child (os.register_at_fork)."""
        # The parent may have held the lock at fork time: a fresh lock, never the inherited one.
        # Aggregates restart at zero so that the parent's and every child's totals add up; the
        # live connections stay (the pool object still holds them in this process).
        self._set_lock(threading.Lock())
        self.identity = self.identity.with_pid(os.getpid())
        self._pending = 0
        self._resolved_at_close = 0
        self.lane.clear_samples()  # the parent's, not folded yet: counted there, not here
        self._reset_aggregates()


def _with_leaks(snap: PoolSnapshot, leaks: Iterable[LeakRecord]) -> PoolSnapshot:
    from dataclasses import replace

    return replace(snap, leaks=tuple(leaks))
