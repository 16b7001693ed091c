"""poolmon.Pool over psycopg 3 connections: a factory and a tiny program.

python examples/pool_psycopg.py postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import sys

import psycopg
from psycopg.pq import TransactionStatus

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
        status = conn.info.transaction_status
        if status == TransactionStatus.UNKNOWN:
            raise psycopg.OperationalError("connection in unknown state")
        if status != TransactionStatus.IDLE:
            conn.rollback()

    def is_broken(self, conn: psycopg.Connection) -> bool:
        return conn.closed or conn.broken

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
