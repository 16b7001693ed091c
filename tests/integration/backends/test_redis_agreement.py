"""Redis: poolmon's client counts and maxclients equal INFO at the same moment.

Several instrumented redis-py clients (through the real shim) hold named connections; the poller
reads INFO and CLIENT LIST in one MULTI, and the test's own MULTI right after sees the same
clients (its groups are unique to this test, so other tenants of the server cannot disturb them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

import poolmon
from poolmon.backends import Poller, RedisReader
from poolmon.backends.redis import parse_client_list, parse_info
from poolmon.core.registry import PoolRegistry
from tests.integration.backends.helpers import Exposition


@pytest.fixture
def instrumented(registry: PoolRegistry) -> Iterator[PoolRegistry]:
    poolmon.instrument("redis")
    try:
        yield registry
    finally:
        poolmon.uninstrument()


def _direct(url: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline(transaction=True)
        pipe.info("clients")
        pipe.client_list()
        info, clients = pipe.execute()
        raw = "\n".join(" ".join(f"{k}={v}" for k, v in c.items()) for c in clients)
        return {k: str(v) for k, v in info.items()}, list(parse_client_list(raw))
    finally:
        client.close()


def test_redis_counts_and_maxclients_equal_info(redis_url: str, instrumented: PoolRegistry) -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"i19-cache-{tag}-{i}" for i in range(3)]
    clients = [redis.Redis.from_url(redis_url, client_name=n) for n in names]
    held = []
    poller = Poller([RedisReader(redis_url)])
    try:
        for i, c in enumerate(clients):
            c.set(f"i19:{tag}:{i}", i)
            # Hold i + 1 connections of client i: borrowed, so they cannot be shared or dropped.
            held.append([c.connection_pool.get_connection() for _ in range(i + 1)])
        poller.poll_once(force=True)
        exposition = Exposition(poller, instrumented)
        info, direct = _direct(redis_url)
        e = exposition.value
        for i, name in enumerate(names):
            expected = sum(1 for _, n, _ in direct if n == name)
            assert expected == i + 1
            assert e("backend_connection_usage", backend_client=name,
                     backend_connection_state="normal",
                     client_address="127.0.0.1") == expected  # fmt: skip
        assert e("backend_connection_limit", backend_system="redis") == int(info["maxclients"])
        snap = poller.snapshot()[0]
        assert snap.up and snap.reading is not None
        assert snap.reading.server_total is not None  # INFO always reports connected_clients
        # INFO's connected_clients of the poller's own MULTI: every client is in a group.
        assert snap.reading.total == snap.reading.server_total >= 6
        # The instrumented pools hold what the backend sees.
        ours = [s for s in instrumented.snapshot() if s.identity.system == "redis"]
        assert sum(s.used for s in ours) == 1 + 2 + 3
        assert e("backend_up", backend_system="redis") == 1
    finally:
        for c, conns in zip(clients, held, strict=False):
            for conn in conns:
                c.connection_pool.release(conn)
            c.delete(*(f"i19:{tag}:{i}" for i in range(3)))
            c.close()
        poller.close()


def test_redis_multi_reading_sums_to_connected_clients(redis_url: str) -> None:
    # The reader's own consistency: CLIENT LIST (minus replicas) == connected_clients, in one EXEC.
    reader = RedisReader(redis_url)
    try:
        conn = reader._connection()
        commands = [("MULTI",), ("INFO", "clients"), ("CLIENT", "LIST"), ("EXEC",)]
        conn.send_packed_command(conn.pack_commands(commands))
        replies = [conn.read_response() for _ in commands]
        info_raw, clients_raw = replies[-1]
        info = parse_info(info_raw.decode())
        assert len(list(parse_client_list(clients_raw.decode()))) == int(info["connected_clients"])
        reading = reader.read()
        assert reading.limit == int(info["maxclients"])
    finally:
        reader.close()
