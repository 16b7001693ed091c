"""A WSGI app whose every gunicorn worker has its own connection pool, all visible on one endpoint.

Run it with the config next to it (three workers, /metrics on the master):

    POOLMON_PROMETHEUS_PORT=9464 gunicorn -c examples/gunicorn_conf.py \\
        --chdir examples gunicorn_app:app
    curl -s localhost:8000/ ; curl -s localhost:9464/metrics | grep pool_connection_usage

Each worker imports this module after the fork (no ``preload_app``), so each has its own pool. To
stay independent of any database, the pool here is a minimal LIFO of in-memory "connections" that
reports to poolmon's recorder directly - exactly the calls a shim or ``poolmon.Pool`` makes for a
real psycopg/redis/urllib3 pool.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterable
from typing import Any

from poolmon.core import get_default_registry
from poolmon.core.identity import PoolIdentity

POOL_SIZE = int(os.environ.get("APP_POOL_SIZE", "2"))


class DemoPool:
    """A fixed-size pool: connections created up front, borrowed and returned per request."""

    def __init__(self, size: int) -> None:
        self.ledger = get_default_registry().register(
            PoolIdentity(name="generic://demo-backend", system="generic"),
            owner=self,
            max_size=size,
            min_size=size,
        )
        self._idle: queue.LifoQueue[int] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(self.ledger.create(self.ledger.now()))

    def borrow(self) -> int:
        t0 = self.ledger.now()
        conn = self._idle.get()
        self.ledger.borrow(conn, t0)
        return conn

    def release(self, conn: int) -> None:
        self.ledger.release(conn)
        self._idle.put(conn)


pool = DemoPool(POOL_SIZE)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    conn = pool.borrow()
    try:
        body = f"pid={os.getpid()} conn={conn}\n".encode()
    finally:
        pool.release(conn)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
