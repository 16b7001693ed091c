"""A ready-made factory for sqlite3 (stdlib): one file, many connections."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from poolmon.core.identity import PoolIdentity
from poolmon.pool.factory import BaseFactory

__all__ = ["SqliteFactory"]


class SqliteFactory(BaseFactory[sqlite3.Connection]):
    """Opens ``sqlite3.connect(path, check_same_thread=False)`` (pooled connections move
    between threads; the pool guarantees one holder at a time).

    ``validate`` runs ``SELECT 1``; ``reset`` rolls back an open transaction.
    """

    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self.identity = PoolIdentity(
            f"sqlite://{Path(self.path).name}", system="sqlite", namespace=Path(self.path).name
        )

    def create(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)

    def validate(self, conn: sqlite3.Connection) -> bool:
        return bool(conn.execute("SELECT 1").fetchone() == (1,))

    def reset(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()

    def destroy(self, conn: sqlite3.Connection) -> None:
        conn.close()
