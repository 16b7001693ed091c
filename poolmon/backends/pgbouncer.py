"""PgBouncer's admin console, read as proxy pools (spec section 12.1).

The admin console (the ``pgbouncer`` pseudo-database) speaks the simple query protocol only: the
reader connects with psycopg in autocommit with prepared statements off
(``prepare_threshold=None``), sends only ``SHOW`` commands and reads columns by name, so a
PgBouncer version that adds columns still reads. One connection is kept between polls (opening
one per poll would cost PgBouncer a login each time); a failed poll drops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from poolmon.backends.readings import ConnectionGroup, ProxyDatabaseStats, ProxyPool, Reading
from poolmon.core.identity import derive_name, identity_from_libpq_dsn

__all__ = ["ADMIN_DATABASE", "PgBouncerReader"]

#: PgBouncer's admin pseudo-database: never reported as a pool.
ADMIN_DATABASE: Final = "pgbouncer"
_US: Final = 1_000_000.0


def _rows(conn: Any, command: str) -> list[dict[str, Any]]:
    cur = conn.execute(command)
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]


def _int(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    if value is None or value == "":
        return 0
    return int(value)


def _opt_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    return float(Decimal(value)) / _US


class PgBouncerReader:
    """Reads one PgBouncer through its admin console; ``dsn`` names an admin (or stats) user."""

    system: Final = "pgbouncer"

    def __init__(self, dsn: str, *, name: str | None = None, connect_timeout: float = 5.0) -> None:
        ident = identity_from_libpq_dsn(dsn)  # remembers the password for scrub()
        self.address = ident.server_address or "localhost"
        self.port = ident.server_port
        self.name = name or derive_name("pgbouncer", self.address, self.port)
        self._dsn = dsn
        self._timeout = connect_timeout
        self._conn: Any = None
        self._version: str | None = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            self._conn = psycopg.connect(
                self._dsn,
                dbname=ADMIN_DATABASE,
                autocommit=True,
                prepare_threshold=None,
                connect_timeout=max(1, round(self._timeout)),
            )
            self._version = None
        return self._conn

    def read(self) -> Reading:
        try:
            return self._read(self._connection())
        except BaseException:
            self.close()
            raise

    def _read(self, conn: Any) -> Reading:
        if self._version is None:
            rows = _rows(conn, "SHOW VERSION")
            text = str(rows[0].get("version", "")) if rows else ""
            self._version = text.removeprefix("PgBouncer ").strip() or None
        config = {str(r["key"]): r.get("value") for r in _rows(conn, "SHOW CONFIG")}
        databases = {str(r["name"]): r for r in _rows(conn, "SHOW DATABASES")}
        pools = _rows(conn, "SHOW POOLS")
        stats = _rows(conn, "SHOW STATS")
        default_size = _opt_int(config.get("default_pool_size"))
        default_mode = str(config.get("pool_mode") or "session")
        proxy_pools = tuple(
            _pool(row, databases.get(str(row["database"])), default_size, default_mode)
            for row in pools
            if row.get("database") != ADMIN_DATABASE
        )
        return Reading(
            groups=_client_groups(proxy_pools),
            limit=_opt_int(config.get("max_client_conn")),
            pools=proxy_pools,
            stats=tuple(
                ProxyDatabaseStats(
                    database=str(r["database"]),
                    total_wait_time=_seconds(r.get("total_wait_time")),
                    avg_wait_time=_seconds(r.get("avg_wait_time")),
                )
                for r in stats
                if r.get("database") != ADMIN_DATABASE
            ),
            version=self._version,
        )

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing more to do
                conn.close()


def _pool(
    row: Mapping[str, Any],
    database: Mapping[str, Any] | None,
    default_size: int | None,
    default_mode: str,
) -> ProxyPool:
    db = database or {}
    size = _opt_int(db.get("pool_size"))
    host = db.get("host")
    port = _opt_int(db.get("port"))
    backend = None
    if database is not None:
        backend = derive_name("postgresql", str(host) if host else "localhost", port or 5432)
    return ProxyPool(
        database=str(row["database"]),
        user=str(row["user"]),
        cl_active=_int(row, "cl_active"),
        cl_waiting=_int(row, "cl_waiting"),
        sv_active=_int(row, "sv_active"),
        sv_idle=_int(row, "sv_idle"),
        sv_used=_int(row, "sv_used"),
        sv_tested=_int(row, "sv_tested"),
        sv_login=_int(row, "sv_login"),
        maxwait=_int(row, "maxwait") + _int(row, "maxwait_us") / _US,
        pool_mode=str(row.get("pool_mode") or db.get("pool_mode") or default_mode),
        pool_size=size if size is not None else default_size,
        min_pool_size=_opt_int(db.get("min_pool_size")),
        backend=backend,
    )


def _client_groups(pools: Sequence[ProxyPool]) -> tuple[ConnectionGroup, ...]:
    by_user: dict[tuple[str, str], int] = {}
    for p in pools:
        for state, count in (("active", p.cl_active), ("waiting", p.cl_waiting)):
            by_user[(p.user, state)] = by_user.get((p.user, state), 0) + count
    return tuple(
        ConnectionGroup(state=state, client=user, address="", count=count)
        for (user, state), count in sorted(by_user.items())
    )
