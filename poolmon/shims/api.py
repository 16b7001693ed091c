"""The recorder behind :mod:`poolmon.api`: pools written against it record into poolmon's ledgers.

``poolmon.api`` itself knows nothing of poolmon (it must stay one dependency-free file); this
module is the other half. :class:`LedgerRecorder` registers one ledger per tracker and binds the
tracker's event methods straight to the ledger's (``borrowed`` *is* ``ledger.borrow``,
``returned`` *is* ``ledger.release``...), so an enabled call costs exactly the ledger's own work,
the same as a shim's record, with the same semantics: counters, histograms, live state, the lock-
free lane, subscribers and exporters all see a tracker's pool like any shimmed pool.

Enabled like a shim (it is listed in :data:`poolmon.shims.SHIMS` as ``"api"``)::

    poolmon.instrument()          # every shim, and this recorder
    poolmon.instrument("api")     # only this one
    poolmon.uninstrument("api")   # trackers fall silent again (their no-ops come back)

Names pass through :func:`poolmon.core.redact.scrub` (a careless name cannot leak a secret);
unknown systems become ``generic``; the tracker is the ledger's weak owner, so a dropped pool
leaves the registry with its tracker.
"""

from __future__ import annotations

import threading
from typing import Any, Final

from poolmon import api
from poolmon.core.catalog import RESOURCES
from poolmon.core.identity import SYSTEMS, PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry

__all__ = [
    "LIBRARY",
    "SUPPORTED",
    "LedgerRecorder",
    "available",
    "instrument",
    "is_instrumented",
    "uninstrument",
]

#: poolmon.api is poolmon's own: every version of it is supported.
LIBRARY: Final = "poolmon"
SUPPORTED: Final = ">=0"

_lock = threading.Lock()
_active: LedgerRecorder | None = None


def identity_of(tracker: api.Tracker) -> PoolIdentity:
    """The credential-free identity of a tracker's pool."""
    system = tracker.system if tracker.system in SYSTEMS else "generic"
    resource = tracker.resource if tracker.resource in RESOURCES else "generic"
    return PoolIdentity(
        name=scrub(str(tracker.name))[:512] or "pool",
        system=system,
        server_address=scrub(tracker.server_address) if tracker.server_address else None,
        server_port=tracker.server_port if isinstance(tracker.server_port, int) else None,
        namespace=scrub(tracker.namespace) if tracker.namespace else None,
        library=tracker.library,
        library_version=tracker.library_version,
        resource=resource,
    )


class LedgerRecorder:
    """Binds :mod:`poolmon.api` trackers to ledgers of ``registry`` (default: the default one)."""

    def __init__(self, registry: PoolRegistry | None = None) -> None:
        self.registry = registry if registry is not None else get_default_registry()

    def bind(self, tracker: api.Tracker) -> None:
        ledger = self.registry.register(
            identity_of(tracker),
            owner=tracker,
            max_size=tracker.max,
            min_size=tracker.min,
            idle_max=tracker.idle_max,
        )
        new_id = tracker.new_id
        create = ledger.create
        create_failed = ledger.create_failed
        error = ledger.error
        now = ledger.now

        def created(t0: float) -> int:
            cid = new_id()
            create(t0, cid)
            return cid

        def failed(
            error_type: str,
            phase: str = "borrow",
            exc: BaseException | str | None = None,
            *,
            conn: int | None = None,
            t0: float | None = None,
        ) -> None:
            # A failed open is the standard's create with outcome error (never an error event),
            # exactly as the shims record it.
            if error_type == "create_failed":
                create_failed(now() if t0 is None else t0, exc)
                return
            duration = None if t0 is None else max(0.0, now() - t0)
            error(error_type, phase, exc, conn=conn, duration=duration)

        tracker.bind(
            ledger,
            now=now,
            created=created,
            validated=ledger.validate,
            waiting=ledger.wait,
            borrowed=ledger.borrow,
            returned=ledger.release,
            evicted=ledger.evict,
            failed=failed,
            closed=ledger.close,
        )

    def unbind(self, tracker: api.Tracker) -> None:
        ledger: Any = tracker.state
        if isinstance(ledger, PoolLedger):
            self.registry.unregister(ledger)


def ledger_of(tracker: api.Tracker) -> PoolLedger | None:
    """The ledger a tracker records into now, if poolmon's recorder has bound it."""
    state: Any = tracker.state
    return state if isinstance(state, PoolLedger) else None


def available() -> bool:
    return True


def instrument(registry: PoolRegistry | None = None) -> bool:
    """Attach poolmon's recorder to every :mod:`poolmon.api` tracker; True (always possible).

    Twice changes nothing; another recorder attached by someone else is replaced.
    """
    global _active
    with _lock:
        if _active is not None and api.attached() is _active:
            return True
        _active = LedgerRecorder(registry)
        api.attach(_active)
    return True


def uninstrument() -> None:
    """Detach poolmon's recorder (only if it is the attached one); trackers fall silent."""
    global _active
    with _lock:
        if _active is not None:
            api.detach(_active)
        _active = None


def is_instrumented() -> bool:
    return _active is not None and api.attached() is _active
