"""A real instrumented workload for the dashboard and alert tests: poolmon.Pool over sqlite3.

Three pools, all recording into one injected registry:

* ``dash-stressed`` (max 2): a warm-up gives it waits, broken returns (evictions, lifetimes) and
  validations; then two holders keep both connections (saturated, oldest borrow growing) while
  waiters queue and time out continuously (pending > 0, timeouts).
* ``dash-flaky`` (max 1): its factory always fails, so borrows record create_failed errors.
* ``dash-calm`` (max 4): one caller borrowing and returning at a gentle pace; nothing to alert on.
* ``https://127.0.0.1:PORT`` (httpx over HTTP/2 to a local hypercorn, through the httpcore shim):
  a multiplexed connection with ``H2_HELD`` streams held open, so the stream panels have data.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolError
from poolmon.pool import Pool, SqliteFactory, factory
from poolmon.shims import httpcore as httpcore_shim

__all__ = ["Workload"]

STRESSED, FLAKY, CALM = "dash-stressed", "dash-flaky", "dash-calm"
H2_HELD = 5


def _refuse() -> sqlite3.Connection:
    raise ConnectionRefusedError("backend refused the connection (test workload)")


class Workload:
    def __init__(self, registry: PoolRegistry, directory: Path, *, waiters: int = 4) -> None:
        self.stressed: Pool[sqlite3.Connection] = Pool(
            SqliteFactory(directory / "stressed.db"),
            name=STRESSED,
            registry=registry,
            max_size=2,
            timeout=1.0,
            validate_after=0,
            maintain=False,
        )
        self.flaky: Pool[sqlite3.Connection] = Pool(
            factory(_refuse),
            name=FLAKY,
            registry=registry,
            max_size=1,
            timeout=0.05,
            backoff_initial=0.01,
            backoff_max=0.05,
            maintain=False,
        )
        self.calm: Pool[sqlite3.Connection] = Pool(
            SqliteFactory(directory / "calm.db"),
            name=CALM,
            registry=registry,
            max_size=4,
            maintain=False,
        )
        self._registry = registry
        self._h2: Any = None
        self._h2_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._held = threading.Barrier(3)  # two holders + start(): both connections are out
        self._threads = [
            threading.Thread(target=self._hold, name="dash-holder", daemon=True) for _ in range(2)
        ]
        self._threads += [
            threading.Thread(target=self._queue, name="dash-waiter", daemon=True)
            for _ in range(waiters)
        ]
        self._threads += [
            threading.Thread(target=self._gentle, name="dash-calm", daemon=True),
            threading.Thread(target=self._connect_failing, name="dash-flaky", daemon=True),
        ]

    # -------------------------------------------------------------- phases

    def _warm_up(self) -> None:
        pool = self.stressed
        # Broken returns: evictions with reason broken, and lifetimes observed.
        for _ in range(3):
            conn = pool.getconn()
            conn.execute("SELECT 1")
            pool.putconn(conn, broken=True)
        # One real wait: hold both, start a borrower, see it queued, then hand one back.
        first, second = pool.getconn(), pool.getconn()
        got = threading.Event()

        def borrow() -> None:
            with pool.connection(timeout=30):
                got.set()

        waiter = threading.Thread(target=borrow, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 30
        while pool.waiting == 0:  # poll real pool state until the borrower is queued
            assert time.monotonic() < deadline, "the borrower never queued"
            time.sleep(0.005)
        pool.putconn(first)
        assert got.wait(30)
        waiter.join(30)
        pool.putconn(second)

    def _hold(self) -> None:
        with self.stressed.connection(timeout=30) as conn:
            conn.execute("SELECT 1")
            self._held.wait(30)
            self._stop.wait()

    def _queue(self) -> None:
        while not self._stop.is_set():
            try:
                with self.stressed.connection(timeout=1.0):
                    pass
            except PoolError:
                pass  # the expected timeout; the ledger counted it

    def _gentle(self) -> None:
        while not self._stop.is_set():
            with self.calm.connection() as conn:
                conn.execute("SELECT 1")
            self._stop.wait(0.05)  # pacing a gentle load, not synchronisation

    def _connect_failing(self) -> None:
        while not self._stop.is_set():
            try:
                with self.flaky.connection(timeout=0.05):
                    pass
            except PoolError:
                pass
            self._stop.wait(0.2)

    # -------------------------------------------------------------- control

    def _start_h2(self) -> None:
        """httpx over HTTP/2 with ``H2_HELD`` requests held at a gate of a real h2 server."""
        import asyncio

        import httpx

        from tests.support.h2_server import H2Server
        from tests.support.http_servers import LoopbackCA

        ca = LoopbackCA()
        self._h2 = H2Server(ca)
        httpcore_shim.instrument(registry=self._registry)
        url = self._h2.url

        async def hold() -> None:
            async with httpx.AsyncClient(http2=True, verify=ca.client_context()) as client:
                await client.get(f"{url}/ok")  # the server's SETTINGS raise the stream limit
                await asyncio.gather(
                    *[client.get(f"{url}/gate/dash", timeout=None) for _ in range(H2_HELD)]
                )

        self._h2_thread = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
        self._h2_thread.start()
        self._h2.wait_at_gate("dash", H2_HELD, timeout=30)

    def start(self) -> None:
        self._warm_up()
        for thread in self._threads:
            thread.start()
        self._held.wait(30)  # both stressed connections are lent before the waiters matter
        self._start_h2()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        for pool in (self.stressed, self.flaky, self.calm):
            pool.close()
        if self._h2 is not None:
            self._h2.open_gate("dash")
            if self._h2_thread is not None:
                self._h2_thread.join(30)
            self._h2.close()
        httpcore_shim.uninstrument()
