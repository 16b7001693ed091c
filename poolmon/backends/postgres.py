"""A PostgreSQL server's own view of its connections: ``pg_stat_activity`` and its limits.

Counts client backends (``backend_type = 'client backend'``: what ``max_connections`` limits) by
state, ``application_name`` and client address in one query, so the groups are one consistent
statistics snapshot. The poller's role needs ``pg_monitor`` (or ``pg_read_all_stats``) to see
other roles' states; without it they count as ``unknown``. One connection is kept between polls,
labelled ``poolmon serve`` through ``fallback_application_name`` (the DSN's own name wins).
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

from poolmon.backends.readings import ConnectionGroup, Reading
from poolmon.core.identity import derive_name, identity_from_libpq_dsn

__all__ = ["POLLER_APPLICATION_NAME", "PostgresReader", "normalize_state"]

#: The ``application_name`` of the poller's own session (unless its DSN sets one).
POLLER_APPLICATION_NAME: Final = "poolmon serve"

_GROUPS: Final = """
SELECT coalesce(application_name, ''), coalesce(host(client_addr), 'local'),
       coalesce(state, 'unknown'), count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1, 2, 3
"""
_LIMITS: Final = """
SELECT name, setting FROM pg_settings
WHERE name IN ('max_connections', 'superuser_reserved_connections', 'reserved_connections')
"""


def normalize_state(state: str) -> str:
    """``idle in transaction (aborted)`` -> ``idle_in_transaction_aborted`` (spec 12.2)."""
    if state == "fastpath function call":
        return "fastpath"
    return "_".join(state.replace("(", " ").replace(")", " ").split()) or "unknown"


class PostgresReader:
    """Reads one PostgreSQL server (the whole cluster, whatever database ``dsn`` names)."""

    system: Final = "postgresql"

    def __init__(self, dsn: str, *, name: str | None = None, connect_timeout: float = 5.0) -> None:
        ident = identity_from_libpq_dsn(dsn)  # remembers the password for scrub()
        self.address = ident.server_address or "localhost"
        self.port = ident.server_port
        self.name = name or derive_name("postgresql", self.address, self.port)
        self._dsn = dsn
        self._timeout = connect_timeout
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, round(self._timeout)),
                fallback_application_name=POLLER_APPLICATION_NAME,
            )
        return self._conn

    def read(self) -> Reading:
        try:
            conn = self._connection()
            groups: dict[tuple[str, str, str], int] = {}
            for app, addr, state, count in conn.execute(_GROUPS).fetchall():
                key = (normalize_state(str(state)), str(app), str(addr))
                groups[key] = groups.get(key, 0) + int(count)
            settings = {str(n): int(v) for n, v in conn.execute(_LIMITS).fetchall()}
        except BaseException:
            self.close()
            raise
        reserved = settings.get("superuser_reserved_connections", 0) + settings.get(
            "reserved_connections", 0
        )
        return Reading(
            groups=tuple(
                ConnectionGroup(state=s, client=c, address=a, count=n)
                for (s, c, a), n in sorted(groups.items())
            ),
            limit=settings.get("max_connections"),
            reserved=reserved,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing more to do
                conn.close()
