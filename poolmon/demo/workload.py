"""The demo workload: real pools doing real work, going through phases a pool sees in production.

* ``calm``: a little traffic, connections reused, no waits;
* ``burst``: more callers than connections: queueing, waits, borrow timeouts;
* ``outage``: the backends are down: creates fail, validations fail, connections are evicted;
* ``leak``: one caller borrows a connection and does not give it back (the leak signal grows
  until poolmon reports ``leak_suspected``), while others carry on.

Two :class:`poolmon.Pool` pools of sqlite3 connections (a file in a temporary directory; the
outage is a factory that refuses while "down") and one urllib3 pool (instrumented by poolmon's
urllib3 shim) against an in-process HTTP server that really goes down. No external service.

Threads: one controller moves through the phases; worker threads loop until :meth:`stop` and
read the current phase each round. Every wait in a worker is ``stop.wait(...)``, so stopping
is prompt; workers catch their pool errors (timeouts are the point of the burst).
"""

from __future__ import annotations

import contextlib
import functools
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.demo.httpserver import DemoHttpServer
from poolmon.errors import ConfigError, PoolError
from poolmon.pool import Pool, PoolConfig, SqliteFactory

__all__ = ["PHASES", "DemoWorkload", "Phase"]


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    description: str


PHASES: Final = (
    Phase("calm", "light traffic, connections reused"),
    Phase("burst", "more callers than connections: waits and timeouts"),
    Phase("outage", "backends down: create errors, failed validations, evictions"),
    Phase("leak", "a caller keeps a connection and never returns it"),
)

_SQLITE_WORKERS: Final = 10
_HTTP_WORKERS: Final = 5
#: Seconds :meth:`DemoWorkload.stop` waits for all its threads together.
_STOP_BUDGET: Final = 3.0


class _FlakySqlite(SqliteFactory):
    """sqlite3 connections whose "server" can be down: creates raise, checks fail, returns
    count as broken."""

    def __init__(self, path: Path, down: threading.Event) -> None:
        super().__init__(path)
        self._down = down

    def create(self) -> sqlite3.Connection:
        if self._down.is_set():
            raise sqlite3.OperationalError("unable to open database file (demo outage)")
        return super().create()

    def validate(self, conn: sqlite3.Connection) -> bool:
        return not self._down.is_set() and super().validate(conn)

    def is_broken(self, conn: sqlite3.Connection) -> bool:
        return self._down.is_set()


class DemoWorkload:
    """Start with :meth:`start`, end with :meth:`stop` (idempotent). ``registry`` receives the
    pools (default: the default registry, so the default exporter shows them)."""

    def __init__(
        self,
        *,
        registry: PoolRegistry | None = None,
        phase_seconds: float = 8.0,
        http: bool = True,
        on_phase: Callable[[Phase], None] | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.2 <= phase_seconds <= 3600:
            raise ConfigError("phase_seconds", phase_seconds, "seconds within [0.2, 3600]")
        self.registry = registry if registry is not None else get_default_registry()
        self.phase_seconds = phase_seconds
        self._http_enabled = http
        self._on_phase = on_phase
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._down = threading.Event()
        self._phase_index = 0
        self._phase_changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._dir = Path(tempfile.mkdtemp(prefix="poolmon-demo-"))
        self.pools: list[Pool[Any]] = []
        self.http_server: DemoHttpServer | None = None
        self._http_pool: Any = None
        self._instrumented_urllib3 = False
        self._started = False

    @property
    def phase(self) -> Phase:
        return PHASES[self._phase_index % len(PHASES)]

    def describe(self) -> str:
        """One line for the screen: the phase and what it does."""
        return f"demo phase: {self.phase.name} ({self.phase.description})"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        db = self._dir / "orders.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, total REAL)")
            conn.executemany(
                "INSERT INTO orders (total) VALUES (?)", [(i * 1.5,) for i in range(100)]
            )

        def config(max_size: int) -> PoolConfig:
            return PoolConfig(
                max_size=max_size,
                timeout=0.25,
                validate_after=0.5,
                idle_timeout=4.0,
                max_lifetime=30.0,
                maintenance_interval=0.5,
                backoff_initial=0.05,
                backoff_max=0.5,
                leak_threshold=min(2.0, self.phase_seconds / 2),
            )

        self.pools = [
            Pool(
                _FlakySqlite(db, self._down),
                config(4),
                name="demo.orders (sqlite)",
                registry=self.registry,
            ),
            Pool(
                _FlakySqlite(db, self._down),
                config(8),
                name="demo.reports (sqlite)",
                registry=self.registry,
            ),
        ]
        if self._http_enabled:
            self._start_http()
        self._spawn(self._controller, "controller")
        for i in range(_SQLITE_WORKERS):
            self._spawn(functools.partial(self._sqlite_worker, i), f"sqlite-{i}")
        if self._http_pool is not None:
            for i in range(_HTTP_WORKERS):
                self._spawn(functools.partial(self._http_worker, i), f"http-{i}")
        self._spawn(self._leaker, "leaker")

    def _start_http(self) -> None:
        import urllib3

        from poolmon.shims import urllib3 as shim

        if not shim.is_instrumented():
            self._instrumented_urllib3 = shim.instrument(registry=self.registry)
        self.http_server = DemoHttpServer()
        self.http_server.up()
        self._http_pool = urllib3.HTTPConnectionPool(
            "127.0.0.1",
            self.http_server.port,
            maxsize=3,
            block=True,
            timeout=urllib3.Timeout(connect=0.5, read=2.0),
            retries=False,
        )

    def stop(self) -> None:
        """Stop every thread, return held connections, close pools, remove the database."""
        self._stop.set()
        with self._phase_changed:
            self._phase_changed.notify_all()
        # One budget for all the joins, not one each: every blocking call in a worker is bounded
        # (pool timeouts <= 1 s, HTTP connect 0.5 s and read 2 s, stop.wait), so they end well
        # within it; one that does not is a daemon and must not hold the process for longer.
        # A thread that never started (start() interrupted) cannot be joined: is_alive() skips it.
        deadline = time.monotonic() + _STOP_BUDGET
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        for pool in self.pools:
            pool.close()
        if self._http_pool is not None:
            self._http_pool.close()
            self._http_pool = None
        if self.http_server is not None:
            self.http_server.down()
        if self._instrumented_urllib3:
            from poolmon.shims import urllib3 as shim

            shim.uninstrument()
            self._instrumented_urllib3 = False
        shutil.rmtree(self._dir, ignore_errors=True)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, daemon=True, name=f"poolmon-demo-{name}")
        self._threads.append(thread)
        thread.start()

    # ------------------------------------------------------------------ phases

    def _controller(self) -> None:
        self._enter(0)
        while not self._stop.wait(self.phase_seconds):
            self._enter(self._phase_index + 1)

    def _enter(self, index: int) -> None:
        with self._phase_changed:
            self._phase_index = index
            self._phase_changed.notify_all()
        outage = self.phase.name == "outage"
        if outage:
            self._down.set()
            if self.http_server is not None:
                self.http_server.down()
        else:
            self._down.clear()
            if self.http_server is not None:
                self.http_server.up()
        if self._on_phase is not None:
            self._on_phase(self.phase)

    # ------------------------------------------------------------------ workers

    def _pause(self, low: float, high: float) -> bool:
        """Sleep a random while; True when stopping."""
        return self._stop.wait(self._rng.uniform(low, high))

    def _sqlite_worker(self, index: int) -> None:
        while not self._stop.is_set():
            phase = self.phase.name
            busy = phase == "burst"
            if not busy and index >= (4 if phase == "outage" else 2):
                if self._pause(0.2, 0.4):
                    return
                continue
            pool = self.pools[index % 2] if not busy else self.pools[0]
            hold = (0.03, 0.12) if busy else (0.002, 0.02)
            try:
                with pool.connection() as conn:
                    conn.execute("SELECT count(*), sum(total) FROM orders").fetchone()
                    self._stop.wait(self._rng.uniform(*hold))  # the caller's own work
            except (PoolError, sqlite3.Error):
                pass  # timeouts and outage errors are what the demo shows
            if self._pause(0.0, 0.02) if busy else self._pause(0.05, 0.15):
                return

    def _http_worker(self, index: int) -> None:
        import urllib3

        while not self._stop.is_set():
            phase = self.phase.name
            busy = phase == "burst"
            if not busy and index >= 1:
                if self._pause(0.2, 0.4):
                    return
                continue
            delay = 60 if busy else 2
            try:
                response = self._http_pool.urlopen(
                    "GET", f"/?ms={delay}", pool_timeout=0.2, preload_content=True
                )
                response.release_conn()
            except (urllib3.exceptions.HTTPError, OSError):
                pass
            if self._pause(0.0, 0.02) if busy else self._pause(0.05, 0.2):
                return

    def _leaker(self) -> None:
        """In the leak phase, borrow one connection from each pool and keep it to the end."""
        while not self._stop.is_set():
            with self._phase_changed:
                while self.phase.name != "leak" and not self._stop.is_set():
                    self._phase_changed.wait()
            if self._stop.is_set():
                return
            held: list[tuple[Pool[Any], Any]] = []
            for pool in self.pools[:1]:
                with contextlib.suppress(PoolError):
                    held.append((pool, pool.getconn(timeout=1.0)))
            response = None
            if self._http_pool is not None:
                try:
                    # Body never read: urllib3 keeps the connection borrowed (the requests
                    # ``stream=True`` leak).
                    response = self._http_pool.urlopen(
                        "GET", "/?ms=1", pool_timeout=1.0, preload_content=False
                    )
                except Exception:
                    response = None
            with self._phase_changed:
                while self.phase.name == "leak" and not self._stop.is_set():
                    self._phase_changed.wait()
            for pool, conn in held:
                pool.putconn(conn)
            if response is not None:
                response.drain_conn()
                response.release_conn()
