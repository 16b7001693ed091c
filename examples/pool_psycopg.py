"""poolmon.Pool over psycopg 3 connections: a factory and a tiny program.

python examples/pool_psycopg.py postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import sys

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus

from poolmon import Pool
from poolmon.core.identity import identity_from_url
from poolmon.pool import BaseFactory


class PsycopgFactory(BaseFactory[psycopg.Connection]):
    """Autocommit connections; ``SELECT 1`` validates; a transaction left open is rolled back,
    a connection in an unknown state (the server went away) fails its reset."""

    def __init__(self, conninfo: str, **kwargs: object) -> None:
        self.conninfo = conninfo
        self.kwargs = kwargs
        self.identity = identity_from_url(
            conninfo, library="psycopg", library_version=psycopg.__version__
        )

    def create(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, **self.kwargs)  # type: ignore[arg-type]

    def validate(self, conn: psycopg.Connection) -> bool:
        conn.execute("SELECT 1")
        return True

    def reset(self, conn: psycopg.Connection) -> None:
        # pgconn's attribute is a C read (~0.06 us); ``conn.info`` builds a ConnectionInfo object
        # on every access (~2 us here), more than the rest of a pool cycle. psycopg_pool reads
        # pgconn too.
        status = conn.pgconn.transaction_status
        if status == TransactionStatus.UNKNOWN:
            raise psycopg.OperationalError("connection in unknown state")
        if status != TransactionStatus.IDLE:
            conn.rollback()

    def is_broken(self, conn: psycopg.Connection) -> bool:
        return conn.pgconn.status == ConnStatus.BAD or conn.broken

    def destroy(self, conn: psycopg.Connection) -> None:
        conn.close()


def main(argv: list[str]) -> int:
    dsn = argv[0] if argv else "postgresql://postgres@127.0.0.1:5432/postgres"
    with Pool(PsycopgFactory(dsn), max_size=4) as pool:
        with pool.connection() as conn:
            print(conn.execute("SELECT version()").fetchone())
        print(pool.snapshot().to_dict()["borrows"], "borrow(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
