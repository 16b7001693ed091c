"""An ordinary application that uses requests, redis and psycopg together, and knows nothing of
poolmon. Run it under ``poolmon run`` to see all three pools on one /metrics page:

    poolmon run -- python examples/app_all.py --http http://127.0.0.1:8000/ \\
        --redis redis://127.0.0.1:6379/0 --pg postgresql://postgres@127.0.0.1/postgres

It does ``--n`` rounds of (HTTP GET, redis SET+GET, PostgreSQL ``SELECT 1``), prints one summary
line, then keeps its pools open until stdin reaches end of file (or says ``exit``), so metrics can
be read while it is alive; it exits with ``--exit-code``.
"""

from __future__ import annotations

import argparse
import os
import sys

import psycopg_pool
import redis
import requests


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http", required=True, help="URL to GET")
    parser.add_argument("--redis", required=True, help="redis URL")
    parser.add_argument("--pg", required=True, help="PostgreSQL connection string")
    parser.add_argument("--n", type=int, default=10, help="rounds of work (default 10)")
    parser.add_argument("--exit-code", type=int, default=0, help="status to exit with")
    args = parser.parse_args(argv)

    key = f"app_all:{os.getpid()}"
    session = requests.Session()
    cache = redis.Redis.from_url(args.redis)
    db = psycopg_pool.ConnectionPool(args.pg, min_size=1, max_size=2, open=True)
    statuses: list[int] = []
    hits = 0
    rows = 0
    try:
        for i in range(args.n):
            statuses.append(session.get(args.http, timeout=10).status_code)
            cache.set(key, str(i), ex=60)
            hits += cache.get(key) == str(i).encode()
            with db.connection() as conn:
                rows += conn.execute("SELECT 1").fetchone() == (1,)
        print(f"http={statuses.count(200)} redis={hits} pg={rows}", flush=True)
        print("app_all: waiting for end of input", file=sys.stderr, flush=True)
        for line in sys.stdin:
            if line.strip() == "exit":
                break
    finally:
        cache.delete(key)
        cache.close()
        db.close()
        session.close()
    return args.exit_code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
