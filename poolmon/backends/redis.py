"""A Redis server's own view of its clients: ``INFO clients`` and ``CLIENT LIST``.

Both are sent inside one ``MULTI``/``EXEC``, so the counted ``CLIENT LIST`` entries and
``connected_clients`` describe the same moment. A single ``redis.Connection`` is used, not a
client with a pool: the poller's own connection must not show up as an application pool when
the redis shim is on in the same process.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, Final

from poolmon.backends.readings import ConnectionGroup, Reading
from poolmon.core.identity import derive_name, identity_from_url

__all__ = ["POLLER_CLIENT_NAME", "RedisReader", "client_state", "parse_client_list", "parse_info"]

#: The ``CLIENT SETNAME`` of the poller's own connection.
POLLER_CLIENT_NAME: Final = "poolmon-serve"


def parse_info(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            key, _, value = line.partition(":")
            out[key.strip()] = value.strip()
    return out


def client_state(fields: dict[str, str]) -> str | None:
    """``blocked``, ``pubsub``, ``multi`` or ``normal``; None for a replica (not a client)."""
    flags = fields.get("flags", "")
    if "S" in flags:
        return None
    if "b" in flags:
        return "blocked"
    subs = sum(int(fields.get(k, "0") or 0) for k in ("sub", "psub", "ssub"))
    if "P" in flags or subs > 0:
        return "pubsub"
    if "x" in flags or fields.get("multi", "-1") not in ("-1", ""):
        return "multi"
    return "normal"


def _address(addr: str) -> str:
    host = addr.rpartition(":")[0] if ":" in addr else addr
    if not host or host.startswith("/"):
        return "local"
    return host.strip("[]")


def parse_client_list(text: str) -> Iterable[tuple[str, str, str]]:
    """``(state, name, address)`` per client of a ``CLIENT LIST`` reply (replicas left out)."""
    for line in text.splitlines():
        fields = dict(word.partition("=")[::2] for word in line.split(" ") if "=" in word)
        if not fields:
            continue
        state = client_state(fields)
        if state is not None:
            yield state, fields.get("name", ""), _address(fields.get("addr", ""))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisReader:
    """Reads one Redis server through a single connection of its own."""

    system: Final = "redis"

    def __init__(self, url: str, *, name: str | None = None, timeout: float = 5.0) -> None:
        ident = identity_from_url(url, system="redis")  # remembers the password for scrub()
        self.address = ident.server_address or "localhost"
        self.port = ident.server_port
        self.name = name or derive_name("redis", self.address, self.port)
        self._url = url
        self._timeout = timeout
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            import redis
            from redis.connection import parse_url

            kwargs: dict[str, Any] = dict(parse_url(self._url))
            cls = kwargs.pop("connection_class", redis.Connection)
            kwargs.setdefault("client_name", POLLER_CLIENT_NAME)
            kwargs.setdefault("socket_timeout", self._timeout)
            kwargs.setdefault("socket_connect_timeout", self._timeout)
            self._conn = cls(**kwargs)
        return self._conn

    def read(self) -> Reading:
        try:
            conn = self._connection()
            commands = [("MULTI",), ("INFO", "clients"), ("CLIENT", "LIST"), ("EXEC",)]
            conn.send_packed_command(conn.pack_commands(commands))
            replies = [conn.read_response() for _ in commands]
        except BaseException:
            self.close()
            raise
        info_raw, clients_raw = replies[-1]
        info = parse_info(_text(info_raw))
        groups: dict[tuple[str, str, str], int] = {}
        for key in parse_client_list(_text(clients_raw)):
            groups[key] = groups.get(key, 0) + 1
        maxclients = info.get("maxclients")
        return Reading(
            groups=tuple(
                ConnectionGroup(state=s, client=c, address=a, count=n)
                for (s, c, a), n in sorted(groups.items())
            ),
            limit=int(maxclients) if maxclients else None,
            server_total=int(info["connected_clients"]) if "connected_clients" in info else None,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing more to do
                conn.disconnect()
