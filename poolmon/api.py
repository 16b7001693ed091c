"""poolmon.api: speak the poolmon standard from your own pool, with no dependency and ~no cost.

This one file is the whole emitter API for pool authors. It imports only the standard library and
nothing else of poolmon, so a library may depend on ``poolmon`` optionally or copy this file into
its own tree (vendor it; keep the name ``poolmon_api.py`` or any other). A pool registers a
:class:`Tracker` once and calls its event methods where things happen::

    from poolmon import api                     # or: from mylib._vendor import poolmon_api as api

    tracker = api.register("jobs-db", system="postgresql", max=10)
    t0 = tracker.now()
    conn = connect()
    cid = tracker.created(t0)                   # a new resource id, unique for the tracker's life
    ...
    tracker.borrowed(cid, t0)                   # t0: when the caller started asking (None: no wait)
    tracker.returned(cid)
    tracker.evicted(cid, "idle_timeout")
    tracker.closed()

Cost (``python -m benchmarks api``): until a recorder attaches, every event method is the
class's own empty method, so a call costs what an empty Python call does; ``now`` is
``time.perf_counter`` itself. When a recorder attaches (poolmon's: ``poolmon.instrument()``,
``poolmon run``, or ``poolmon.instrument("api")``), it shadows the methods of every tracker,
present and future, with its own (:meth:`Tracker.bind`; poolmon binds them straight to its
ledger's methods, so enabled calls cost what a shim's do); detaching puts the no-ops back.
Swapping an attribute is atomic, so a pool keeps running through attach and detach; an event
that straddles the swap is seen by one side only, like a stream that begins late (spec 2.4).

Copies share one hub: every copy of this file (poolmon's own and vendored ones) keeps its trackers
and the attached recorder in one object stored in ``sys.modules`` under :data:`HUB_KEY`, so a
recorder attached through any copy sees the trackers of all of them.

The rules (docs/for-pool-authors.md): ids come from :meth:`Tracker.created`; call the methods in
the order things happen, under the pool's own lock where the pool has one; never put a password,
token or URL userinfo in a name; evict a resource before its pool closes; resolve every
``waiting()`` with a queued ``borrowed`` or a ``failed(..., phase="wait")``.

Versioned with the standard: :data:`SPEC_VERSION` is the version these events speak. Within a
major version the surface only grows (new optional arguments and methods, never removals).
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any, Final, Protocol

__all__ = [
    "ERROR_TYPES",
    "EVENT_METHODS",
    "EVICTION_REASONS",
    "HUB_KEY",
    "PHASES",
    "RESOURCES",
    "SPEC_VERSION",
    "SYSTEMS",
    "Recorder",
    "Tracker",
    "attach",
    "attached",
    "detach",
    "register",
    "trackers",
]

#: The version of the poolmon standard these events speak (spec/README.md section 11).
SPEC_VERSION: Final = "1.1"

#: Where every copy of this module keeps the shared hub (trackers and the attached recorder).
HUB_KEY: Final = "poolmon.api.hub"

#: The standard's closed enumerations (spec sections 5-7), for authors' reference and tests.
SYSTEMS: Final = ("postgresql", "redis", "http", "sqlite", "generic")
RESOURCES: Final = ("connection", "worker", "generic")
EVICTION_REASONS: Final = (
    "idle_timeout",
    "max_lifetime",
    "failed_validation",
    "broken",
    "reset_failed",
    "overflow",
    "pool_closed",
    "leaked",
    "fork",
    "shrink",
    "other",
)
ERROR_TYPES: Final = (
    "timeout",
    "exhausted",
    "create_failed",
    "validation_failed",
    "reset_failed",
    "leak_suspected",
    "cancelled",
    "pool_closed",
    "other",
)
PHASES: Final = (
    "create",
    "validate",
    "wait",
    "borrow",
    "return",
    "reset",
    "evict",
    "close",
    "maintain",
)


class Recorder(Protocol):
    """What receives a tracker's events. poolmon's is ``poolmon.shims.api.LedgerRecorder``.

    ``bind`` replaces the tracker's event methods (``now``, ``created``, ``validated``,
    ``waiting``, ``borrowed``, ``returned``, ``evicted``, ``failed``, ``closed``) with its own,
    keeping their signatures, by calling ``tracker.bind(state, **methods)``; ids for
    ``created`` come from ``tracker.new_id()``. ``unbind``
    forgets the tracker (the hub then puts the no-ops back). Neither may raise into the pool:
    the hub isolates a recorder that does.
    """

    def bind(self, tracker: Tracker) -> None: ...

    def unbind(self, tracker: Tracker) -> None: ...


#: The event methods a recorder binds (instance attributes shadowing the class's no-ops).
EVENT_METHODS: Final = (
    "now",
    "created",
    "validated",
    "waiting",
    "borrowed",
    "returned",
    "evicted",
    "failed",
    "closed",
)


class Tracker:
    """One pool's voice. Create it with :func:`register`; keep it as long as the pool lives.

    The disabled path: the event methods below are the class's own no-op methods, so a call
    with no recorder is one specialised method load and an empty call (CPython 3.11 caches the
    lookup for instances whose ``__dict__`` does not shadow it). A recorder binds its own
    functions as instance attributes of the same names, which shadow the no-ops; detaching
    deletes them again. Their meaning (the standard's events, spec section 1.2):

    ``now() -> float``
        A monotonic clock reading, for the ``t0`` arguments (``time.perf_counter`` unless a
        recorder brings its own clock).
    ``created(t0) -> int``
        A resource was opened; opening started at ``t0``. Returns its id (unique, never reused).
    ``validated(conn, t0, *, ok)``
        A health check of ``conn`` ran from ``t0``; after ``ok=False`` evict it next.
    ``waiting()``
        A caller found nothing idle and queued. Resolve it later with
        ``borrowed(conn, t0, queued=True)`` or ``failed("timeout"|"cancelled"|"pool_closed",
        phase="wait", t0=t0)``.
    ``borrowed(conn, t0=None, *, queued=False)``
        ``conn`` was handed to a caller that started asking at ``t0`` (None: it did not wait).
    ``returned(conn)``
        The caller gave ``conn`` back.
    ``evicted(conn, reason)``
        The pool closed ``conn``; ``reason`` is one of :data:`EVICTION_REASONS`.
    ``failed(error_type, phase="borrow", error=None, *, conn=None, t0=None)``
        Something failed (:data:`ERROR_TYPES`, :data:`PHASES`); ``t0`` gives the duration.
        A failed open is ``failed("create_failed", "create", exc, t0=t0)``; a failed health check
        is ``validated(conn, t0, ok=False)``, not an error.
    ``closed()``
        The pool is closed (evict its resources first).
    """

    # No __slots__: recorders bind by instance attribute (see the class docstring).

    def __init__(
        self,
        name: str,
        system: str = "generic",
        *,
        resource: str = "connection",
        max: int | None = None,
        min: int | None = None,
        idle_max: int | None = None,
        server_address: str | None = None,
        server_port: int | None = None,
        namespace: str | None = None,
        library: str | None = None,
        library_version: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        for label, value in (("max", max), ("min", min), ("idle_max", idle_max)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{label} must be an int >= 0 or None, got {value!r}")
        self.name = name
        self.system = system
        self.resource = resource
        self.max = max
        self.min = min
        self.idle_max = idle_max
        self.server_address = server_address
        self.server_port = server_port
        self.namespace = namespace
        self.library = library
        self.library_version = library_version
        #: The attached recorder's per-tracker state (poolmon: the ledger); None when detached.
        self.state: Any = None
        #: The id source: ints from 1, never reused, whichever recorder is attached (or none).
        self.new_id: Callable[[], int] = itertools.count(1).__next__

    # ------------------------------------------------------------ the disabled path: no-ops

    now: Callable[[], float] = staticmethod(time.perf_counter)

    def created(self, t0: float) -> int:
        return self.new_id()

    def validated(self, conn: int, t0: float, *, ok: bool) -> None:
        return None

    def waiting(self) -> int | None:
        return None

    def borrowed(self, conn: int, t0: float | None = None, *, queued: bool = False) -> None:
        return None

    def returned(self, conn: int) -> None:
        return None

    def evicted(self, conn: int, reason: str) -> None:
        return None

    def failed(
        self,
        error_type: str,
        phase: str = "borrow",
        error: BaseException | str | None = None,
        *,
        conn: int | None = None,
        t0: float | None = None,
    ) -> None:
        return None

    def closed(self) -> None:
        return None

    def bind(self, state: Any, **methods: Callable[..., Any]) -> None:
        """For recorders: shadow the named no-ops (:data:`EVENT_METHODS`) with ``methods``.

        ``state`` is the recorder's per-tracker state (kept in :attr:`state`). ``borrowed`` and
        ``returned`` are installed last, so a concurrent call never reaches a bound hot method
        before the rest of the binding exists (each attribute store is atomic).
        """
        unknown = set(methods) - set(EVENT_METHODS)
        if unknown:
            raise ValueError(f"not event methods: {', '.join(sorted(unknown))}")
        self.state = state
        attrs = vars(self)
        for name in sorted(methods, key=lambda n: n in ("borrowed", "returned")):
            attrs[name] = methods[name]

    def _mute(self) -> None:
        """Put the no-ops back (no recorder). Called by the hub only; the name is part of the
        hub's protocol, shared by every vendored copy of this module, so it never changes."""
        attrs = vars(self)
        for name in EVENT_METHODS:
            attrs.pop(name, None)
        self.state = None

    @property
    def observed(self) -> bool:
        """True while a recorder receives this tracker's events."""
        return "borrowed" in vars(self)

    def __repr__(self) -> str:
        return f"<Tracker {self.name!r} {self.resource} observed={self.observed}>"


# ------------------------------------------------------------------ the hub, shared by all copies


def _hub() -> Any:
    hub = sys.modules.get(HUB_KEY)
    if hub is None:
        fresh: Any = types.ModuleType(HUB_KEY, "poolmon.api's shared state (trackers, recorder)")
        fresh.lock = threading.RLock()
        fresh.trackers = weakref.WeakSet()
        fresh.recorder = None
        hub = sys.modules.setdefault(HUB_KEY, fresh)  # setdefault: two racing copies agree
    return hub


_HUB: Final = _hub()


def _bind(recorder: Recorder, tracker: Tracker) -> None:
    try:
        recorder.bind(tracker)
    except Exception:
        # A recorder that fails must not break the pool: the tracker stays silent.
        tracker._mute()  # noqa: SLF001 (the hub's protocol with trackers of every copy)


def _unbind(recorder: Recorder, tracker: Tracker) -> None:
    with contextlib.suppress(Exception):
        recorder.unbind(tracker)
    tracker._mute()  # noqa: SLF001 (the hub's protocol with trackers of every copy)


def register(
    name: str,
    system: str = "generic",
    *,
    resource: str = "connection",
    max: int | None = None,
    min: int | None = None,
    idle_max: int | None = None,
    server_address: str | None = None,
    server_port: int | None = None,
    namespace: str | None = None,
    library: str | None = None,
    library_version: str | None = None,
) -> Tracker:
    """A tracker for a new pool; bound at once if a recorder is attached.

    ``name``: what the pool is called (never a password, token or URL with userinfo);
    ``system``: one of :data:`SYSTEMS`; ``resource``: one of :data:`RESOURCES` (``worker`` for
    pools of threads or processes); ``max``/``min``/``idle_max``: the configured limits. Keep
    the tracker as long as the pool: the hub holds it weakly, so a dropped pool's metrics go.
    """
    tracker = Tracker(
        name,
        system,
        resource=resource,
        max=max,
        min=min,
        idle_max=idle_max,
        server_address=server_address,
        server_port=server_port,
        namespace=namespace,
        library=library,
        library_version=library_version,
    )
    with _HUB.lock:
        _HUB.trackers.add(tracker)
        recorder = _HUB.recorder
        if recorder is not None:
            _bind(recorder, tracker)
    return tracker


def attach(recorder: Recorder) -> Recorder | None:
    """Send every tracker's events (present and future) to ``recorder``; returns the previous one.

    The previous recorder, if any, is detached first.
    """
    with _HUB.lock:
        previous: Recorder | None = _HUB.recorder
        if previous is recorder:
            return previous
        live = list(_HUB.trackers)
        if previous is not None:
            for tracker in live:
                _unbind(previous, tracker)
        _HUB.recorder = recorder
        for tracker in live:
            _bind(recorder, tracker)
    return previous


def detach(recorder: Recorder | None = None) -> None:
    """Stop recording: every tracker gets its no-ops back. With ``recorder`` given, only if it is
    the one attached (so one party cannot detach another's)."""
    with _HUB.lock:
        current: Recorder | None = _HUB.recorder
        if current is None or (recorder is not None and current is not recorder):
            return
        _HUB.recorder = None
        for tracker in list(_HUB.trackers):
            _unbind(current, tracker)


def attached() -> Recorder | None:
    """The recorder attached now, if any."""
    recorder: Recorder | None = _HUB.recorder
    return recorder


def trackers() -> list[Tracker]:
    """The live trackers of every copy of this module."""
    with _HUB.lock:
        return list(_HUB.trackers)
