"""Conformance-kit adapters over the shims on real servers: psycopg_pool and redis-py.

Each adapter instruments its library through the public API (``poolmon.instrument(name,
registry=...)``) when the kit opens a pool and uninstruments it when the kit closes it, so every
scenario sees a fresh shim recording into the kit's private registry. A resource is broken the
way a real one breaks: its server side is killed (``pg_terminate_backend`` of that backend,
Redis ``CLIENT KILL ID`` of that client), scoped to the adapter's own connections, through a
connection outside any pool (the kit's stream then holds the pool under test only).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import poolmon
from poolmon.core.registry import PoolRegistry

__all__ = ["PsycopgPoolAdapter", "RedisPoolAdapter"]


class PsycopgPoolAdapter:
    """``psycopg_pool.ConnectionPool`` (getconn/putconn) against a real PostgreSQL."""

    emits_close = True

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.app = f"poolmon-kit-{uuid.uuid4().hex[:8]}"  # our connections, and only ours

    def open(self, max_size: int, registry: PoolRegistry) -> None:
        from psycopg_pool import ConnectionPool

        assert poolmon.instrument("psycopg", registry=registry) == ["psycopg"]
        self.pool = ConnectionPool(
            self.dsn,
            min_size=0,
            max_size=max_size,
            kwargs={"application_name": self.app},
            open=True,
            name=self.app,
        )

    def borrow(self, timeout: float) -> Any:
        return self.pool.getconn(timeout=timeout)

    def give_back(self, handle: Any) -> None:
        self.pool.putconn(handle)

    def break_resource(self, handle: Any) -> None:
        import psycopg

        pid = handle.info.backend_pid
        with psycopg.connect(self.dsn, autocommit=True, application_name=self.app) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid = %s AND application_name = %s",
                (pid, self.app),
            )
        with contextlib.suppress(psycopg.OperationalError):
            handle.execute("SELECT 1")  # the client finds out on its next use, as an app would
        assert handle.broken or handle.closed

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            poolmon.uninstrument("psycopg")


class RedisPoolAdapter:
    """``redis.BlockingConnectionPool`` (get_connection/release) against a real Redis."""

    emits_close = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = f"poolmon-kit-{uuid.uuid4().hex[:8]}"

    def open(self, max_size: int, registry: PoolRegistry) -> None:
        import redis

        assert poolmon.instrument("redis", registry=registry) == ["redis"]
        self.pool = redis.BlockingConnectionPool.from_url(
            self.url, max_connections=max_size, timeout=5.0, client_name=self.name
        )

    def borrow(self, timeout: float) -> Any:
        # BlockingConnectionPool takes its timeout from the pool, not the call.
        self.pool.timeout = timeout
        return self.pool.get_connection()

    def give_back(self, handle: Any) -> None:
        self.pool.release(handle)

    def break_resource(self, handle: Any) -> None:
        import redis

        handle.send_command("CLIENT", "ID")
        client_id = handle.read_response()
        kwargs = self.pool.connection_kwargs
        admin = redis.Connection(
            host=kwargs.get("host", "127.0.0.1"),
            port=kwargs.get("port", 6379),
            client_name=self.name,
        )
        try:
            admin.send_command("CLIENT", "KILL", "ID", client_id)
            assert admin.read_response() == 1
        finally:
            admin.disconnect()

    def close(self) -> None:
        try:
            self.pool.close()
        finally:
            poolmon.uninstrument("redis")
