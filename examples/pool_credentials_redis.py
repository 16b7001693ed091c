"""poolmon.Pool over redis-py connections whose password rotates (a secrets manager, an ACL
password changed on schedule): the provider is asked at every connect, the pool keeps nothing.

python examples/pool_credentials_redis.py redis://127.0.0.1:6379/0 USER SECRET_FILE

SECRET_FILE holds the current password (e.g. written by a Vault agent or a Kubernetes secret
volume); rotate it, then ``pool.drain()`` (or wait for ``max_lifetime``) and new connections
use the new one while the old ones finish their work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import redis
from redis.connection import Connection

from poolmon import Pool
from poolmon.core.identity import identity_from_url
from poolmon.pool import credentialed


class FileSecret:
    """A provider: reads the current password at each call (never cached)."""

    def __init__(self, username: str, path: str) -> None:
        self.username = username
        self.path = Path(path)

    def __call__(self) -> dict[str, str]:
        return {"username": self.username, "password": self.path.read_text().strip()}

    def __repr__(self) -> str:
        return f"FileSecret({self.username!r}, {str(self.path)!r})"


def redis_pool(url: str, provider: Any, **options: Any) -> Pool[Connection]:
    """A pool of raw redis-py connections authenticated with whatever ``provider`` returns."""
    target = redis.connection.parse_url(url)
    target.pop("connection_class", None)
    for key in ("username", "password"):
        target.pop(key, None)  # credentials come from the provider only

    def connect(**creds: Any) -> Connection:
        conn = Connection(**target, **creds, retry_on_timeout=False)
        conn.connect()
        return conn

    def ping(conn: Connection) -> bool:
        conn.send_command("PING", check_health=False)
        return conn.read_response() in (b"PONG", "PONG", True)

    factory = credentialed(
        connect,
        provider,
        validate=ping,
        is_broken=lambda conn: not conn.is_connected,
        destroy=lambda conn: conn.disconnect(),
    )
    identity = identity_from_url(url, library="redis", library_version=redis.__version__)
    return Pool(factory, identity=identity, **options)


def main(argv: list[str]) -> int:
    defaults = ["redis://127.0.0.1:6379/0", "default", "/dev/null"]
    url, user, secret_file = [*argv, *defaults[len(argv) :]][:3]
    pool = redis_pool(url, FileSecret(user, secret_file), max_size=4)
    with pool, pool.connection() as conn:
        conn.send_command("PING")
        print(conn.read_response())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
