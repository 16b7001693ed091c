"""poolmon.Pool over raw redis-py connections: a factory and a tiny program.

python examples/pool_redis.py redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import sys

import redis
from redis.connection import Connection

from poolmon import Pool
from poolmon.core.identity import identity_from_url
from poolmon.pool import BaseFactory


class RedisFactory(BaseFactory[Connection]):
    """One ``redis.connection.Connection`` per slot; ``PING`` validates; a connection whose
    socket redis-py dropped after an error is broken."""

    def __init__(self, url: str, *, client_name: str | None = None) -> None:
        self.url = url
        self.client_name = client_name
        self.identity = identity_from_url(url, library="redis", library_version=redis.__version__)

    def create(self) -> Connection:
        kwargs = redis.connection.parse_url(self.url)
        kwargs.pop("connection_class", None)
        conn = Connection(**kwargs, client_name=self.client_name, retry_on_timeout=False)
        conn.connect()
        return conn

    def validate(self, conn: Connection) -> bool:
        conn.send_command("PING", check_health=False)
        return conn.read_response() in (b"PONG", "PONG", True)

    def is_broken(self, conn: Connection) -> bool:
        return not conn.is_connected

    def destroy(self, conn: Connection) -> None:
        conn.disconnect()


def main(argv: list[str]) -> int:
    url = argv[0] if argv else "redis://127.0.0.1:6379/0"
    with Pool(RedisFactory(url), max_size=4) as pool, pool.connection() as conn:
        conn.send_command("PING")
        print(conn.read_response())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
