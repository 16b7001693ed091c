"""The background maintainer: a daemon thread (or asyncio task) running maintenance passes.

It holds only a weak reference to its pool, so an application that drops a pool without closing
it does not keep it alive: the next tick finds the reference dead and the maintainer exits. It
survives its own errors: a failing pass is counted (``poolmon.shim.errors``, label
``maintainer``), logged once, and the next pass runs on schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable
from typing import Protocol

from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.selfmetrics import log_once

__all__ = ["start_task", "start_thread"]

_log = logging.getLogger("poolmon")
_MIN_DELAY = 0.001


class _SyncMaintained(Protocol):
    @property
    def ledger(self) -> PoolLedger: ...

    def run_maintenance(self) -> float: ...


class _AsyncMaintained(Protocol):
    @property
    def ledger(self) -> PoolLedger: ...

    def run_maintenance(self) -> Awaitable[float]: ...


def _failed(ledger: PoolLedger, exc: BaseException) -> None:
    ledger.self_metrics.inc("poolmon.shim.errors", "maintainer")
    log_once(
        _log,
        f"maintainer:{ledger.name}",
        "poolmon: maintenance of pool %s failed: %s (further failures are only counted)",
        ledger.name,
        scrub(f"{type(exc).__name__}: {exc}"),
    )


def start_thread(pool: _SyncMaintained, stop: threading.Event, interval: float) -> threading.Thread:
    """Start the maintainer thread of ``pool``; it ends when ``stop`` is set or the pool dies."""
    ref = weakref.ref(pool)
    weakref.finalize(pool, stop.set)
    thread = threading.Thread(
        target=_loop, args=(ref, stop, interval), name=f"poolmon-maintainer:{pool.ledger.name}"
    )
    thread.daemon = True
    thread.start()
    return thread


def _loop(ref: weakref.ref[_SyncMaintained], stop: threading.Event, interval: float) -> None:
    while not stop.is_set():
        pool = ref()
        if pool is None:
            return
        try:
            delay = pool.run_maintenance()
        except Exception as exc:
            _failed(pool.ledger, exc)
            delay = interval
        del pool  # never hold the pool across the sleep
        stop.wait(max(delay, _MIN_DELAY))


def start_task(pool: _AsyncMaintained, stop: asyncio.Event, interval: float) -> asyncio.Task[None]:
    """Start the maintainer task of an async pool on the running loop."""
    ref = weakref.ref(pool)
    return asyncio.get_running_loop().create_task(
        _async_loop(ref, stop, interval), name=f"poolmon-maintainer:{pool.ledger.name}"
    )


async def _async_loop(
    ref: weakref.ref[_AsyncMaintained], stop: asyncio.Event, interval: float
) -> None:
    while not stop.is_set():
        pool = ref()
        if pool is None:
            return
        ledger = pool.ledger
        try:
            delay = await pool.run_maintenance()
        except Exception as exc:
            _failed(ledger, exc)
            delay = interval
        del pool
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(delay, _MIN_DELAY))
