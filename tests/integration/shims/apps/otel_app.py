"""An unmodified application: psycopg_pool and redis-py, no poolmon import anywhere.

Run under ``opentelemetry-instrument python otel_app.py``; poolmon's instrumentors (entry points)
must make its pools visible. Settings come from the environment (set by the test).
"""

from __future__ import annotations

import os

import redis
from psycopg_pool import ConnectionPool

PG_DSN = os.environ["APP_PG_DSN"]
REDIS_URL = os.environ["APP_REDIS_URL"]
PREFIX = os.environ["APP_KEY_PREFIX"]
CYCLES = 5

# Like most services, the pools live as long as the process (metrics are exported at exit).
pool = ConnectionPool(
    PG_DSN,
    min_size=1,
    max_size=2,
    open=False,
    name="otel-app-pg",
    kwargs={"application_name": PREFIX},
)
client = redis.Redis.from_url(REDIS_URL)


def main() -> None:
    with pool:
        for i in range(CYCLES):
            with pool.connection() as conn:
                assert conn.execute("select %s::int", (i,)).fetchone() == (i,)
    for i in range(CYCLES):
        client.set(f"{PREFIX}:{i}", i, ex=60)
        assert client.get(f"{PREFIX}:{i}") == str(i).encode()
    client.close()
    print("app done", flush=True)


if __name__ == "__main__":
    main()
