"""A real instrumented workload for the dashboard and alert tests: poolmon.Pool over sqlite3.

The pools, all recording into one injected registry:

* ``dash-stressed`` (max 2): a warm-up gives it waits, broken returns (evictions, lifetimes) and
  validations; then two holders keep both connections (saturated, oldest borrow growing) while
  waiters queue and time out continuously (pending > 0, timeouts).
* ``dash-flaky`` (max 1): its factory always fails, so borrows record create_failed errors.
* ``dash-calm`` (max 4): one caller borrowing and returning at a gentle pace; nothing to alert on.
* ``dash-shared`` (max 2, burst to 3; spec 1.1 section 14): tenants with quotas (``acme`` holds
  its one connection for the whole run), a wait budget and burst capacity. Each cycle of one
  driver thread sees ``acme`` fail at its quota (quota_exceeded), opens a burst connection for
  a queued caller, is shed for another tenant with the pool at its ceiling, and closes the
  burst connection in a maintenance pass (burst_shrink). See :meth:`_shared_cycle`.
* ``dash-routing``: a :class:`~poolmon.pool.RoutingPool` over a sqlite primary and one replica
  whose connects are refused (a killed replica): the router takes it out of service, reads
  fail over to the primary, and periodic probes keep it out.
* ``https://127.0.0.1:PORT`` (httpx over HTTP/2 to a local hypercorn, through the httpcore shim):
  a multiplexed connection with ``H2_HELD`` streams held open, so the stream panels have data.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolError, PoolQuotaExceeded, PoolShed
from poolmon.pool import Pool, RoutingPool, SqliteFactory, TenantQuota, factory
from poolmon.shims import httpcore as httpcore_shim

__all__ = ["Workload"]

STRESSED, FLAKY, CALM = "dash-stressed", "dash-flaky", "dash-calm"
SHARED, ROUTING = "dash-shared", "dash-routing"
#: The shared pool's wait budget, and how long its driver holds a connection before the shed
#: attempt: with shed_smoothing 1.0 the estimate is the last use time, so a caller queueing at
#: the ceiling (3 connections) is estimated at >= HOLD / 3 = 0.1 s, twice the budget, while the
#: burst borrower, queued right after a borrow of microseconds, is far below it.
WAIT_BUDGET, HOLD = 0.05, 0.3
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
        self.shared: Pool[sqlite3.Connection] = Pool(
            SqliteFactory(directory / "shared.db"),
            name=SHARED,
            registry=registry,
            max_size=2,
            burst_max=3,
            burst_after=0.01,
            burst_idle=0.0,  # a returned burst connection is surplus at the next maintenance
            tenants={"acme": TenantQuota(limit=1), "globex": TenantQuota(limit=2)},
            tenant_policy="wait",  # acme's excess borrows wait, then fail at its quota
            wait_budget=WAIT_BUDGET,
            shed_smoothing=1.0,
            validate_after=None,
            timeout=5.0,
            maintain=False,  # the driver runs maintenance itself (burst_shrink), in order
        )
        self.routing: RoutingPool[sqlite3.Connection] = RoutingPool(
            SqliteFactory(directory / "primary.db"),
            [factory(_refuse)],
            name=ROUTING,
            registry=registry,
            read_after_write=0.0,  # every read is routed (no read-after-write pinning)
            probe_timeout=0.05,
            max_size=2,
            timeout=1.0,
            backoff_initial=0.01,
            backoff_max=0.05,
            maintain=False,
        )
        self._acme: sqlite3.Connection | None = None
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
            threading.Thread(target=self._drive_shared, name="dash-shared", daemon=True),
            threading.Thread(target=self._route, name="dash-routing", daemon=True),
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

    def _drive_shared(self) -> None:
        while not self._stop.is_set():
            self._shared_cycle()
            self._stop.wait(0.05)  # pacing

    def _shared_cycle(self) -> None:
        """One cycle over ``dash-shared`` while ``acme`` holds its one connection (its limit).

        1. A borrow of microseconds: the use-time estimate is tiny.
        2. ``acme`` asks for a second connection: it queues (the estimate is below the budget)
           although one is idle, and its short wait ends in ``quota_exceeded`` (phase wait).
        3. ``globex`` takes the other normal connection: both are lent.
        4. An ``initech`` caller queues (estimated wait far below the budget); once it has waited
           ``burst_after`` the pool opens a burst connection for it: 3 lent, the ceiling.
        5. ``globex`` returns after HOLD and borrows again: the estimate is now >= HOLD, and
           ``hooli``, about to queue at the ceiling, is shed (>= HOLD / 3 > WAIT_BUDGET).
        6. Everything is returned; a maintenance pass closes the burst connection (burst_shrink).

        (The policy is ``wait``: under ``refuse`` a pool at its ceiling refuses every tenant
        with quota_exceeded before the shed estimate is consulted.)
        """
        pool = self.shared
        with pool.connection(tenant="globex"):
            pass
        self._refused(lambda: pool.getconn(tenant="acme", timeout=0.05), PoolQuotaExceeded)
        held = pool.getconn(tenant="globex")
        lent, release = threading.Event(), threading.Event()

        def burst_borrower() -> None:
            try:
                with pool.connection(tenant="initech", timeout=5.0):
                    lent.set()
                    release.wait(30)
            except PoolError:
                lent.set()  # shed after a stall of the machine: this cycle has no burst

        borrower = threading.Thread(target=burst_borrower, name="dash-burst", daemon=True)
        borrower.start()
        try:
            assert lent.wait(30), "the burst borrower was never served"
            self._stop.wait(HOLD)  # the use time the shed estimate will see (pacing)
            pool.putconn(held)
            held = pool.getconn(tenant="globex")
            self._refused(lambda: pool.getconn(tenant="hooli", timeout=0.5), PoolShed)
        finally:
            pool.putconn(held)
            release.set()
            borrower.join(30)
        pool.run_maintenance()

    def _refused(
        self, borrow: Callable[[], sqlite3.Connection], expected: type[BaseException]
    ) -> None:
        """Run a borrow the cycle expects to fail with ``expected`` (the ledger counts it: the
        series the panels and alerts read); return the connection should it succeed."""
        try:
            self.shared.putconn(borrow())
        except expected:
            pass
        except PoolError:
            pass  # e.g. a stop during the hold left a short use time: a plain timeout

    def _route(self) -> None:
        rounds = 0
        while not self._stop.is_set():
            with self.routing.connection(readonly=True) as conn:  # fails over to the primary
                conn.execute("SELECT 1")
            with self.routing.connection() as conn:  # a write
                conn.execute("SELECT 1")
            rounds += 1
            if rounds % 10 == 0:
                self.routing.check()  # probes the refused replica: it stays out of service
            self._stop.wait(0.05)  # pacing

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
        self._acme = self.shared.getconn(tenant="acme")  # acme at its limit for the whole run
        for thread in self._threads:
            thread.start()
        self._held.wait(30)  # both stressed connections are lent before the waiters matter
        self._start_h2()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        if self._acme is not None:
            self.shared.putconn(self._acme)
        for pool in (self.stressed, self.flaky, self.calm, self.shared):
            pool.close()
        self.routing.close()
        if self._h2 is not None:
            self._h2.open_gate("dash")
            if self._h2_thread is not None:
                self._h2_thread.join(30)
            self._h2.close()
        httpcore_shim.uninstrument()
