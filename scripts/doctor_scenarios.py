"""Real workloads, one per ``poolmon doctor`` finding plus a healthy one; prints the table.

python scripts/doctor_scenarios.py [PG_DSN [REDIS_URL]]

Each scenario runs a short real workload (poolmon.Pool and the shims, against the real
PostgreSQL and Redis and a loopback HTTP server) built to show exactly one problem, records it
the way a user would (a JSONL event log, a served /metrics page with /poolmon/snapshot.json, or
the in-process registry), and diagnoses that. The table prints each scenario's findings;
``tests/integration/doctor/test_scenarios.py`` asserts it. Time that matters to a finding (a
leak's age, a quiet period before breakage) is moved on an injected ManualClock, never slept.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from poolmon import Pool  # noqa: E402
from poolmon.core.clock import ManualClock  # noqa: E402
from poolmon.core.identity import PoolIdentity  # noqa: E402
from poolmon.core.registry import PoolRegistry  # noqa: E402
from poolmon.core.sinks import JsonlSink  # noqa: E402
from poolmon.demo.httpserver import DemoHttpServer  # noqa: E402
from poolmon.doctor import Report, Thresholds, diagnose  # noqa: E402
from poolmon.doctor.rules import KINDS  # noqa: E402
from poolmon.errors import PoolExhausted  # noqa: E402
from poolmon.pool import factory  # noqa: E402

__all__ = ["EXPECTED", "SCENARIOS", "Env", "run_all", "table"]

DEFAULT_PG = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DEFAULT_REDIS = os.environ.get("POOLMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Env:
    pg_dsn: str
    redis_url: str
    http: DemoHttpServer
    workdir: Path
    tag: str  # application_name / client name prefix: kills stay scoped to our connections

    def jsonl(self, name: str) -> Path:
        return self.workdir / f"{name}.jsonl"


def _pg_identity(env: Env, name: str) -> PoolIdentity:
    info = psycopg.conninfo.conninfo_to_dict(env.pg_dsn)
    return PoolIdentity(
        name=name,
        system="postgresql",
        server_address=str(info.get("host", "127.0.0.1")),
        server_port=int(info.get("port", 5432)),
        namespace=str(info.get("dbname", "postgres")),
        library="poolmon",
    )


def _redis_identity(env: Env, name: str) -> PoolIdentity:
    kwargs = redis.Redis.from_url(env.redis_url).connection_pool.connection_kwargs
    return PoolIdentity(
        name=name,
        system="redis",
        server_address=str(kwargs.get("host", "127.0.0.1")),
        server_port=int(kwargs.get("port", 6379)),
        library="poolmon",
    )


def _pg_factory(env: Env, setup: str | None = None) -> Any:
    def create() -> psycopg.Connection[Any]:
        conn = psycopg.connect(env.pg_dsn, autocommit=True, application_name=env.tag)
        if setup:
            conn.execute(setup)  # a slow session setup (think: auth hook, SET ROLE, warm-up)
        return conn

    def validate(conn: psycopg.Connection[Any]) -> bool:
        conn.execute("SELECT 1")
        return True

    return factory(create, validate=validate, is_broken=lambda c: bool(c.closed or c.broken))


def _redis_factory(env: Env) -> Any:
    def create() -> redis.Redis:
        client = redis.Redis.from_url(
            env.redis_url, single_connection_client=True, client_name=env.tag
        )
        client.ping()
        return client

    return factory(create, validate=lambda c: c.ping())


@contextmanager
def _recorded(
    env: Env, name: str, clock: ManualClock | None = None
) -> Iterator[tuple[PoolRegistry, Path]]:
    registry = PoolRegistry(clock=clock) if clock is not None else PoolRegistry()
    path = env.jsonl(name)
    sink = JsonlSink(path)
    unsubscribe = registry.subscribe(sink)
    try:
        yield registry, path
    finally:
        unsubscribe()
        sink.close()


def _threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # surfaced below: a scenario must not fail silently
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------------- scenarios


def healthy(env: Env) -> Report:
    """poolmon.Pool(max_size=8) over PostgreSQL, 4 callers, 10 ms queries: nothing to say."""
    with _recorded(env, "healthy") as (registry, path):
        pool = Pool(
            _pg_factory(env), max_size=8, registry=registry, identity=_pg_identity(env, "healthy")
        )
        with pool:

            def work(_: int) -> None:
                for _ in range(40):
                    with pool.connection() as conn:
                        conn.execute("SELECT pg_sleep(0.01)")

            _threads(4, work)
    return diagnose(jsonl=[path])


def undersized(env: Env) -> Report:
    """psycopg_pool ConnectionPool(max_size=2), instrumented by the shim, for 8 callers."""
    import psycopg_pool

    import poolmon.shims.psycopg as shim

    with _recorded(env, "undersized") as (registry, path):
        shim.instrument(registry)
        try:
            pool = psycopg_pool.ConnectionPool(
                env.pg_dsn,
                min_size=1,
                max_size=2,
                timeout=30,
                open=True,
                kwargs={"application_name": env.tag},
            )
            with pool:

                def work(_: int) -> None:
                    for _ in range(10):
                        with pool.connection() as conn:
                            conn.execute("SELECT pg_sleep(0.005)")

                _threads(8, work)
        finally:
            shim.uninstrument()
    return diagnose(jsonl=[path])


def oversized(env: Env) -> Report:
    """poolmon.Pool(max_size=20, min_size=12, eager): one caller at a time uses it."""
    with _recorded(env, "oversized") as (registry, path):
        pool = Pool(
            _pg_factory(env),
            max_size=20,
            min_size=12,
            eager=True,
            registry=registry,
            identity=_pg_identity(env, "oversized"),
        )
        with pool:
            for _ in range(40):
                with pool.connection() as conn:
                    conn.execute("SELECT pg_sleep(0.02)")
    return diagnose(jsonl=[path])


def storm(env: Env) -> Report:
    """Four workers start at once, each filling poolmon.Pool(min_size=6, eager) on Redis."""
    with _recorded(env, "storm") as (registry, path):
        pools = [
            Pool(
                _redis_factory(env),
                min_size=6,
                max_size=8,
                eager=True,
                registry=registry,
                identity=_redis_identity(env, f"worker-{i}"),
            )
            for i in range(4)
        ]
        for pool in pools:
            with pool.connection() as client:
                client.ping()
            pool.close()
    return diagnose(jsonl=[path])


def churn(env: Env) -> Report:
    """requests with HTTPAdapter(pool_maxsize=2) and 8 threads: returns overflow, sockets churn."""
    import requests
    from requests.adapters import HTTPAdapter

    import poolmon.shims.urllib3 as shim

    with _recorded(env, "churn") as (registry, path):
        shim.instrument(registry)
        try:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=2))
            # Requests of 50 ms: connects (~1 ms on loopback, more on a loaded machine) stay
            # far below the slow-connect ratio, so only churn is found.
            url = env.http.url + "/?ms=50"

            def work(_: int) -> None:
                for _ in range(8):
                    session.get(url, timeout=10).raise_for_status()

            _threads(8, work)
            session.close()
        finally:
            shim.uninstrument()
    return diagnose(jsonl=[path])


def forgotten_report(pool: Pool[Any]) -> Any:
    """The leak: a connection taken and never given back (what the finding must point at)."""
    conn = pool.getconn()
    conn.execute("SELECT 1")
    return conn


def leak(env: Env) -> Report:
    """poolmon.Pool with sampled borrow stacks, served on /metrics; one borrow is never returned."""
    from poolmon.prometheus import serve

    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    pool = Pool(
        _pg_factory(env),
        max_size=4,
        stack_sample_every=1,
        maintain=False,
        registry=registry,
        clock=clock,
        identity=_pg_identity(env, "leaky"),
    )
    with pool, serve(0, registry=registry) as server:
        for _ in range(5):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        kept = forgotten_report(pool)
        clock.advance(120.0)  # two minutes pass (on the injected clock)
        report = diagnose(urls=[server.url])
        pool.putconn(kept)
    return report


def slow_connect(env: Env) -> Report:
    """poolmon.Pool whose connections take 200 ms of session setup, for <1 ms of use each."""
    with _recorded(env, "slow_connect") as (registry, path):
        pool = Pool(
            _pg_factory(env, setup="SELECT pg_sleep(0.2)"),
            max_size=3,
            max_lifetime=None,
            registry=registry,
            identity=_pg_identity(env, "slow-connect"),
        )
        with pool:

            def work(_: int) -> None:
                for _ in range(8):
                    with pool.connection() as conn:
                        conn.execute("SELECT 1")

            _threads(3, work)
    return diagnose(jsonl=[path])


def silent_breakage(env: Env) -> Report:
    """Connections idle 10 minutes are killed on the server side (an idle kill); the next
    borrows find them dead in validation."""
    clock = ManualClock()
    with _recorded(env, "silent_breakage", clock) as (registry, path):
        pool = Pool(
            _pg_factory(env),
            max_size=4,
            validate_after=1.0,
            maintain=False,
            registry=registry,
            clock=clock,
            identity=_pg_identity(env, "breakage"),
        )
        with pool:
            held = [pool.getconn() for _ in range(4)]
            for conn in held:
                pool.putconn(conn)
            clock.advance(600.0)  # ten quiet minutes
            with psycopg.connect(env.pg_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (env.tag,),
                )
            again = [pool.getconn() for _ in range(4)]
            for conn in again:
                conn.execute("SELECT 1")
                pool.putconn(conn)
    return diagnose(jsonl=[path])


def refusals(env: Env) -> Report:
    """poolmon.Pool(max_size=2, fail_fast=True) for 6 callers: refused at once."""
    with _recorded(env, "refusals") as (registry, path):
        pool = Pool(
            _pg_factory(env),
            max_size=2,
            fail_fast=True,
            registry=registry,
            identity=_pg_identity(env, "fail-fast"),
        )
        with pool:

            def work(_: int) -> None:
                for _ in range(10):
                    try:
                        with pool.connection() as conn:
                            conn.execute("SELECT pg_sleep(0.003)")
                    except PoolExhausted:
                        pass

            _threads(6, work)
    return diagnose(jsonl=[path])


def overcommit(env: Env) -> Report:
    """Three instances, each allowed as many PostgreSQL and Redis connections as the servers
    accept in all; limits read from the real servers (--backend)."""
    from poolmon.doctor.backend import read_limit
    from poolmon.prometheus import serve

    pg_limit = read_limit(env.pg_dsn).limit
    redis_limit = read_limit(env.redis_url).limit
    servers = []
    pools = []
    try:
        for i in range(3):
            registry = PoolRegistry()
            pg = Pool(
                _pg_factory(env),
                max_size=pg_limit,
                registry=registry,
                identity=_pg_identity(env, f"app-{i}-pg"),
            )
            rd = Pool(
                _redis_factory(env),
                max_size=redis_limit,
                registry=registry,
                identity=_redis_identity(env, f"app-{i}-redis"),
            )
            pools += [pg, rd]
            with pg.connection() as conn:
                conn.execute("SELECT 1")
            with rd.connection() as client:
                client.ping()
            servers.append(serve(0, registry=registry))
        return diagnose(urls=[s.url for s in servers], backends=[env.pg_dsn, env.redis_url])
    finally:
        for s in servers:
            s.close()
        for p in pools:
            p.close()


SCENARIOS: dict[str, Callable[[Env], Report]] = {
    "healthy": healthy,
    "undersized": undersized,
    "oversized": oversized,
    "storm": storm,
    "churn": churn,
    "leak": leak,
    "slow_connect": slow_connect,
    "silent_breakage": silent_breakage,
    "refusals": refusals,
    "overcommit": overcommit,
}
#: What each scenario must yield: exactly these kinds (the healthy one none).
EXPECTED: dict[str, frozenset[str]] = {
    name: frozenset() if name == "healthy" else frozenset({name}) for name in SCENARIOS
}


@contextmanager
def environment(pg_dsn: str = DEFAULT_PG, redis_url: str = DEFAULT_REDIS) -> Iterator[Env]:
    http = DemoHttpServer()
    http.up()
    with tempfile.TemporaryDirectory(prefix="poolmon-doctor-") as tmp:
        try:
            yield Env(pg_dsn, redis_url, http, Path(tmp), f"poolmon-doctor-{uuid.uuid4().hex[:8]}")
        finally:
            http.down()


def run_all(env: Env, names: list[str] | None = None) -> dict[str, Report]:
    return {name: SCENARIOS[name](env) for name in names or list(SCENARIOS)}


def table(reports: dict[str, Report]) -> str:
    """Scenario x finding: the severity where a finding fired, ``.`` where none did."""
    width = max(len(k) for k in KINDS) + 1
    head = "scenario".ljust(17) + "".join(k[:width].rjust(width) for k in KINDS)
    lines = [head, "-" * len(head)]
    for name, report in reports.items():
        kinds = {f.kind: f.severity for f in report.findings}
        cells = "".join((kinds.get(k, ".")).rjust(width) for k in KINDS)
        lines.append(name.ljust(17) + cells)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    pg_dsn = argv[0] if argv else DEFAULT_PG
    redis_url = argv[1] if len(argv) > 1 else DEFAULT_REDIS
    started = time.perf_counter()
    with environment(pg_dsn, redis_url) as env:
        reports = run_all(env)
    print(table(reports))
    wrong = [n for n, r in reports.items() if {f.kind for f in r.findings} != EXPECTED[n]]
    print(
        f"\n{len(reports)} scenarios in {time.perf_counter() - started:.1f}s; "
        + (
            f"MISMATCH: {', '.join(wrong)}"
            if wrong
            else "every scenario yields exactly its finding"
        )
    )
    _ = Thresholds
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
