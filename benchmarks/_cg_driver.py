"""One process, one mode, one case, run under callgrind by ``benchmarks.instructions``.

``python -m benchmarks._cg_driver MODE CASE N``: builds the case's pool against the real local
server, instruments it when MODE is ``poolmon`` (``peer``: with the case's peer from
:data:`PEERS`, the instrumentation that covers the same operation), warms up, then runs N
operations. Nothing is timed here: callgrind counts what the calling thread executes.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Final, Protocol, TypeVar

PG_DSN = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POOLMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

Loop = Callable[[int], None]
C = TypeVar("C")


class _Build(Protocol):
    def __call__(self, *, e2e: bool) -> Loop: ...


def _cycles(get: Callable[[], C], put: Callable[[C], object]) -> Loop:
    """The raw cycle: borrow and return, nothing in between."""

    def raw(n: int) -> None:
        for _ in range(n):
            put(get())

    return raw


def _psycopg_pool(*, e2e: bool) -> Loop:
    from psycopg_pool import ConnectionPool

    from benchmarks.shim_psycopg import _pp_e2e, _pp_raw

    pool = ConnectionPool(PG_DSN, min_size=1, max_size=1, open=True, name="cg")
    pool.wait()
    return _pp_e2e(pool) if e2e else _pp_raw(pool)


def _psycopg2(*, e2e: bool) -> Loop:
    from psycopg2.pool import ThreadedConnectionPool

    from benchmarks.shim_psycopg import _pg2_e2e, _pg2_raw

    pool = ThreadedConnectionPool(1, 1, PG_DSN)
    return _pg2_e2e(pool) if e2e else _pg2_raw(pool)


def _redis(*, e2e: bool) -> Loop:
    import redis

    pool = redis.ConnectionPool.from_url(REDIS_URL)
    client = redis.Redis(connection_pool=pool)
    client.set("poolmon-instructions", b"x" * 64)

    def read(n: int) -> None:
        g = client.get
        for _ in range(n):
            g("poolmon-instructions")

    return read if e2e else _cycles(pool.get_connection, pool.release)


_SERVER = """
import sys
from tests.support.http_servers import LoopbackServer
server = LoopbackServer()
print(server.port, flush=True)
sys.stdin.read()  # until the driver exits
server.close()
"""


def _server_port() -> int:
    import atexit
    import subprocess

    # The server in a process of its own (started with exec, so valgrind does not follow it):
    # in this process its threads would take the GIL back and forth with the calling thread and
    # blur the count.
    server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    atexit.register(server.kill)
    assert server.stdout is not None
    return int(server.stdout.readline())


def _urllib3(*, e2e: bool) -> Loop:
    from urllib3 import HTTPConnectionPool

    port = _server_port()
    pool = HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    pool.request("GET", "/ok")

    def request(n: int) -> None:
        for _ in range(n):
            pool.request("GET", "/ok")

    # Bound after instrument(): main() instruments before any pool exists.
    return request if e2e else _cycles(pool._get_conn, pool._put_conn)


def _sqlalchemy(*, e2e: bool) -> Loop:
    import sqlalchemy as sa

    url = PG_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    query = sa.text("SELECT 1")

    def select(n: int) -> None:
        connect = engine.connect
        for _ in range(n):
            with connect() as conn:
                conn.execute(query).scalar()

    pool = engine.pool
    return select if e2e else _cycles(pool.connect, lambda fairy: fairy.close())


def _asyncpg(*, e2e: bool) -> Loop:
    import asyncio

    import asyncpg

    loop = asyncio.new_event_loop()

    async def make() -> asyncpg.Pool:
        return await asyncpg.create_pool(PG_DSN, min_size=1, max_size=1)

    pool = loop.run_until_complete(make())

    async def fetchval(n: int) -> None:
        f = pool.fetchval
        for _ in range(n):
            await f("SELECT 1")

    async def raw(n: int) -> None:
        acquire, release = pool.acquire, pool.release
        for _ in range(n):
            await release(await acquire())

    body = fetchval if e2e else raw
    return lambda n: loop.run_until_complete(body(n))


def _otel_sqlalchemy() -> None:
    """The peer: opentelemetry-instrumentation-sqlalchemy with an SDK MeterProvider (its pool
    metric, ``db.client.connections.usage``, is recorded on checkout and checkin) and the default
    no-op tracer (spans cost their no-op calls only). Its declared range stops below SQLAlchemy
    2.1, so its dependency check is skipped: it runs unchanged on 2.1."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    SQLAlchemyInstrumentor().instrument(
        meter_provider=provider, enable_commenter=False, skip_dep_check=True
    )


def _httpx(*, e2e: bool) -> Loop:
    """httpx.Client GET on loopback HTTP/1.1 keep-alive (one connection, reused)."""
    import httpx

    url = f"http://127.0.0.1:{_server_port()}/ok"
    client = httpx.Client()
    client.get(url)

    def request(n: int) -> None:
        get = client.get
        for _ in range(n):
            get(url)

    return request


def _async_loop(once: Callable[[], object]) -> Loop:
    import asyncio

    loop = asyncio.new_event_loop()

    async def many(n: int) -> None:
        for _ in range(n):
            await once()  # type: ignore[misc]

    def run(n: int) -> None:
        loop.run_until_complete(many(n))

    return run


def _httpx_async(*, e2e: bool) -> Loop:
    """httpx.AsyncClient GET on loopback HTTP/1.1 keep-alive, one event loop for all."""
    import httpx

    url = f"http://127.0.0.1:{_server_port()}/ok"
    client = httpx.AsyncClient()
    return _async_loop(lambda: client.get(url))


def _aiohttp(*, e2e: bool) -> Loop:
    """aiohttp ClientSession GET (body read) on loopback HTTP/1.1 keep-alive."""
    import aiohttp

    url = f"http://127.0.0.1:{_server_port()}/ok"
    holder: list[aiohttp.ClientSession] = []

    async def get() -> None:
        if not holder:
            holder.append(aiohttp.ClientSession())
        async with holder[0].get(url) as response:
            await response.read()

    return _async_loop(get)


def _otel_providers() -> None:
    """The SDK's tracer and meter providers, as an instrumented service has them (no exporter:
    spans and measurements are made and dropped, so only the instrumentation's own cost counts)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider())


def _peer_httpx() -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    _otel_providers()
    HTTPXClientInstrumentor().instrument()


def _peer_aiohttp() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    _otel_providers()
    AioHttpClientInstrumentor().instrument()


_OTEL_SQLALCHEMY: Final = "opentelemetry.instrumentation.sqlalchemy"
_OTEL_HTTPX: Final = "opentelemetry.instrumentation.httpx"
_OTEL_AIOHTTP: Final = "opentelemetry.instrumentation.aiohttp_client"

#: Peers that instrument the same operation, set up (like poolmon) before the pool exists: the
#: OpenTelemetry contrib instrumentation of the same library where there is one. Per case:
#: (label, the module it needs, its setup); ``benchmarks.instructions`` skips a peer whose module
#: is not installed (the ``bench`` extra declares them).
PEERS: dict[str, tuple[str, str, Callable[[], None]]] = {
    "sqlalchemy-raw": ("otel-contrib", _OTEL_SQLALCHEMY, _otel_sqlalchemy),
    "sqlalchemy-select": ("otel-contrib", _OTEL_SQLALCHEMY, _otel_sqlalchemy),
    "httpx-get": ("otel-contrib", _OTEL_HTTPX, _peer_httpx),
    "httpx-async-get": ("otel-contrib", _OTEL_HTTPX, _peer_httpx),
    "aiohttp-get": ("otel-contrib", _OTEL_AIOHTTP, _peer_aiohttp),
}

#: Operations per run (small, large) and warm-up, where the default (500/1500, 300) would keep
#: callgrind busy for many minutes: an HTTP client request is ~10x a redis GET in instructions.
SIZES: dict[str, tuple[int, int, int]] = {
    "httpx-get": (100, 300, 100),
    "httpx-async-get": (100, 300, 100),
    "aiohttp-get": (100, 300, 100),
}

CASES: dict[str, tuple[str, _Build, bool]] = {
    "psycopg_pool-raw": ("psycopg", _psycopg_pool, False),
    "psycopg_pool-select": ("psycopg", _psycopg_pool, True),
    "psycopg2-raw": ("psycopg2", _psycopg2, False),
    "psycopg2-select": ("psycopg2", _psycopg2, True),
    "redis-raw": ("redis", _redis, False),
    "redis-get": ("redis", _redis, True),
    "urllib3-raw": ("urllib3", _urllib3, False),
    "urllib3-get": ("urllib3", _urllib3, True),
    "sqlalchemy-raw": ("sqlalchemy", _sqlalchemy, False),
    "sqlalchemy-select": ("sqlalchemy", _sqlalchemy, True),
    "asyncpg-raw": ("asyncpg", _asyncpg, False),
    "asyncpg-fetchval": ("asyncpg", _asyncpg, True),
    "httpx-get": ("httpx", _httpx, True),
    "httpx-async-get": ("httpx", _httpx_async, True),
    "aiohttp-get": ("aiohttp", _aiohttp, True),
}


def main(argv: list[str]) -> int:
    mode, case, n = argv[0], argv[1], int(argv[2])
    library, build, e2e = CASES[case]
    if mode == "poolmon":
        # Instrumented before the pool exists, as an application started under poolmon run.
        import poolmon
        from poolmon.core.registry import PoolRegistry

        poolmon.instrument(library, registry=PoolRegistry())
    elif mode == "imported":
        # poolmon imported and set up as for "poolmon", nothing instrumented: what its import
        # alone does to the process (the type cache's layout, the heap), apart from its hooks.
        import poolmon
        from poolmon.core.registry import PoolRegistry

        poolmon.instrument(library, registry=PoolRegistry())
        poolmon.uninstrument()
    elif mode == "peer":
        PEERS[case][2]()
    loop = build(e2e=e2e)
    loop(SIZES[case][2] if case in SIZES else 300)  # warm up: first sight, adoption, bytecode
    # Everything alive now is set aside from the cyclic GC: its full collections would otherwise
    # scan a heap that differs between the modes (poolmon's own modules) at points that differ
    # between the runs, thousands of instructions per operation of noise.
    gc.freeze()
    loop(n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
