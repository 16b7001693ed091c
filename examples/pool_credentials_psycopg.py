"""poolmon.Pool over psycopg connections with short-lived tokens (cloud IAM database auth):
the provider mints or reads the current token at every connect; the pool keeps nothing.

python examples/pool_credentials_psycopg.py "host=127.0.0.1 dbname=postgres" USER TOKEN_FILE

With AWS RDS IAM auth the provider would be, for instance::

    rds = boto3.client("rds")
    def provider():
        return {"user": USER, "password": rds.generate_db_auth_token(HOST, 5432, USER)}

(tokens live 15 minutes: set ``max_lifetime`` below that, so no connection outlives the token
it was opened with and rotation needs no restart).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg

from poolmon import Pool
from poolmon.core.identity import identity_from_libpq_dsn
from poolmon.pool import credentialed


class TokenFile:
    """A provider reading the current token (a Vault agent sink, a projected volume)."""

    def __init__(self, user: str, path: str) -> None:
        self.user = user
        self.path = Path(path)

    def __call__(self) -> dict[str, str]:
        return {"user": self.user, "password": self.path.read_text().strip()}

    def __repr__(self) -> str:
        return f"TokenFile({self.user!r}, {str(self.path)!r})"


def psycopg_pool(dsn: str, provider: Any, **options: Any) -> Pool[psycopg.Connection[Any]]:
    """A pool of autocommit psycopg connections authenticated by ``provider``."""

    def connect(**creds: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True, **creds)

    def check(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SELECT 1")

    factory = credentialed(
        connect,
        provider,
        validate=check,
        is_broken=lambda conn: conn.broken or conn.closed,
    )
    options.setdefault("max_lifetime", 600.0)  # below a 15-minute token's life
    identity = identity_from_libpq_dsn(dsn, library="psycopg", library_version=psycopg.__version__)
    return Pool(factory, identity=identity, **options)


def main(argv: list[str]) -> int:
    defaults = ["host=127.0.0.1 dbname=postgres", "postgres", "/dev/null"]
    dsn, user, token_file = [*argv, *defaults[len(argv) :]][:3]
    pool = psycopg_pool(dsn, TokenFile(user, token_file), max_size=4)
    with pool, pool.connection() as conn:
        print(conn.execute("SELECT 1").fetchone())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
