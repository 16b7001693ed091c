"""``poolmon serve``: poll PgBouncer and backends, serve their metrics on ``/metrics``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

__all__ = ["register"]

_EPILOG = """\
examples:
  poolmon serve --pgbouncer 'host=127.0.0.1 port=6432 user=pgbouncer' \\
                --backend postgresql://monitor@127.0.0.1:5432/postgres \\
                --backend redis://127.0.0.1:6379/0
  poolmon serve --backend postgresql://monitor@db:5432/postgres --once

Passwords can stay out of the command line: libpq reads PGPASSWORD and ~/.pgpass. Credentials
never appear in metrics, logs or errors.

Exit status:
  0  served until interrupted or --duration ended; with --once: every source was up
  1  with --once: at least one source was down
  2  bad arguments (the message names the parameter and the accepted range)
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="Poll PgBouncer pools and backend connection counts; serve them on /metrics",
        description=(
            "Poll PgBouncer's admin console (SHOW POOLS, SHOW STATS...), PostgreSQL "
            "(pg_stat_activity, max_connections) and Redis (INFO clients, CLIENT LIST) every "
            "interval and serve them, named as in the poolmon catalog, on /metrics. A source "
            "that is down is reported as down (backend_up 0) and retried with backoff."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--pgbouncer", metavar="DSN", action="append", default=[],
        help="a PgBouncer admin console (libpq DSN of an admin or stats user; repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--backend", metavar="DSN|URL", action="append", default=[],
        help="a PostgreSQL DSN or a Redis URL (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--interval", type=float, default=10.0, metavar="S", help="poll every S seconds (10)"
    )
    parser.add_argument("--port", type=int, default=9464, metavar="N", help="/metrics port (9464)")
    parser.add_argument("--addr", default="127.0.0.1", metavar="A", help="listen address")
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--once", action="store_true", help="poll once, print the exposition and exit"
    )
    parser.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> None:
    from poolmon.errors import ConfigError

    if not 1.0 <= args.interval <= 86400.0:
        raise ConfigError("--interval", args.interval, "seconds in [1, 86400]")
    if not 0 <= args.port <= 65535:
        raise ConfigError("--port", args.port, "an integer in [0, 65535] (0 picks a free port)")
    from poolmon.exporters.config import is_listen_host

    if not is_listen_host(args.addr):
        raise ConfigError("--addr", args.addr, "an IP address or a host name to listen on")
    if args.duration is not None and not 0 < args.duration <= 10**7:
        raise ConfigError("--duration", args.duration, "seconds in (0, 10000000]")
    if not args.pgbouncer and not args.backend:
        raise ConfigError("--pgbouncer/--backend", "none", "at least one of them")


def _run(args: argparse.Namespace) -> int:
    from poolmon.errors import ConfigError

    try:
        _check(args)
        if args.once:
            return _once(args)
        from poolmon.backends.server import serve

        server = serve(args.pgbouncer, args.backend, interval=args.interval, port=args.port,
                       addr=args.addr)  # fmt: skip
    except ConfigError as exc:
        print(f"poolmon serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the port is taken, the address is not local
        from poolmon.core.redact import scrub

        print(f"poolmon serve: --port/--addr: {scrub(str(exc))}", file=sys.stderr)
        return 2
    print(f"poolmon serve: {', '.join(server.poller.names)} on {server.url}", file=sys.stderr)
    try:
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _once(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, generate_latest

    from poolmon.backends.poller import Poller, readers_for
    from poolmon.backends.server import attach
    from poolmon.core.registry import PoolRegistry
    from poolmon.exporters.prometheus import register_collector

    with Poller(readers_for(args.pgbouncer, args.backend), interval=args.interval) as poller:
        prom = CollectorRegistry(auto_describe=False)
        attach(poller, register_collector(prom, registry=PoolRegistry()))
        poller.poll_once(force=True)
        sys.stdout.write(generate_latest(prom).decode())
        return 0 if all(s.up for s in poller.snapshot()) else 1
