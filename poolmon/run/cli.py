"""``poolmon run [options] -- COMMAND ...``: run a program with every installed pool instrumented."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["register", "settings_from_args"]

_DESCRIPTION = """\
Run COMMAND (any Python program: python app.py, gunicorn ..., pytest ...) with every supported
installed connection pool instrumented (psycopg_pool, psycopg2.pool, redis-py, urllib3/requests,
httpx/httpcore, aiohttp)
and the chosen exporters running, without changing its code. COMMAND replaces this process, so
its exit code, stdin, stdout and stderr are exactly its own.

Options become POOLMON_* environment variables, which Python subprocesses of COMMAND inherit;
the same variables work without this command's options (an option wins over the variable).
Without --exporter or POOLMON_EXPORTERS, metrics are served for Prometheus on
http://127.0.0.1:9464/metrics.
"""

_EPILOG = """\
examples:
  poolmon run -- python app.py
  poolmon run --exporter prometheus --port 9100 -- gunicorn -w 4 app:app
  poolmon run --exporter otlp --otlp-endpoint http://collector:4318 -- python worker.py
  poolmon run --exporter jsonl --jsonl events.jsonl --leak-threshold 30 -- python job.py

environment: POOLMON_EXPORTERS, POOLMON_PROMETHEUS_PORT, POOLMON_PROMETHEUS_ADDR,
POOLMON_OTLP_ENDPOINT, POOLMON_JSONL_PATH, POOLMON_SEMCONV, POOLMON_LEAK_THRESHOLD,
POOLMON_RUN_INFO (see docs/run.md).
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="Run a Python program with every installed pool instrumented",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--exporter",
        action="append",
        metavar="NAME",
        help="prometheus, otlp or jsonl; repeat or comma-separate for several "
        "(default: prometheus)",
    )
    parser.add_argument("--port", type=int, help="Prometheus /metrics port (0: a free port)")
    parser.add_argument("--addr", help="address /metrics binds (default 127.0.0.1)")
    parser.add_argument("--jsonl", metavar="PATH", help="event log file of the jsonl exporter")
    parser.add_argument("--otlp-endpoint", metavar="URL", help="OTLP endpoint (else OTEL_* vars)")
    parser.add_argument(
        "--semconv",
        action="store_true",
        help="export the official OpenTelemetry semantic-convention names",
    )
    parser.add_argument(
        "--leak-threshold",
        type=float,
        metavar="S",
        help="report borrows held longer than S seconds as suspected leaks",
    )
    parser.add_argument(
        "--info-file",
        metavar="PATH",
        help="write JSON (pid, active shims, metrics URL) here once started (for scripts)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the program and its arguments")
    parser.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> dict[str, str]:
    """The ``POOLMON_*`` variables the options stand for (only the options given)."""
    out: dict[str, str] = {}
    if args.exporter:
        names = [n.strip() for item in args.exporter for n in item.split(",") if n.strip()]
        out["POOLMON_EXPORTERS"] = ",".join(names)
    if args.port is not None:
        out["POOLMON_PROMETHEUS_PORT"] = str(args.port)
    if args.addr:
        out["POOLMON_PROMETHEUS_ADDR"] = args.addr
    if args.jsonl:
        out["POOLMON_JSONL_PATH"] = os.path.abspath(args.jsonl)
    if args.otlp_endpoint:
        out["POOLMON_OTLP_ENDPOINT"] = args.otlp_endpoint
    if args.semconv:
        out["POOLMON_SEMCONV"] = "true"
    if args.leak_threshold is not None:
        out["POOLMON_LEAK_THRESHOLD"] = repr(args.leak_threshold)
    if args.info_file:
        out["POOLMON_RUN_INFO"] = os.path.abspath(args.info_file)
    return out


def _check(env: Mapping[str, str]) -> str | None:
    """The configuration error the program would meet, as a message (None: fine)."""
    from poolmon.errors import PoolmonError
    from poolmon.exporters.config import ExporterConfig

    try:
        ExporterConfig.from_env(env)
    except (PoolmonError, ValueError) as exc:
        return str(exc)
    return None


def _run(args: argparse.Namespace) -> int:
    from poolmon.run.env import build_environment

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print(
            "poolmon run: no command given (usage: poolmon run [options] -- COMMAND ...)",
            file=sys.stderr,
        )
        return 2
    env = build_environment(settings_from_args(args))
    problem = _check(env)
    if problem is not None:
        print(f"poolmon run: {problem}", file=sys.stderr)
        return 2
    info = env.get("POOLMON_RUN_INFO")
    if info and os.path.exists(info):
        os.unlink(info)  # the bootstrap writes it only if absent: no stale file from a past run
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)
    except FileNotFoundError:
        print(f"poolmon run: command not found: {command[0]}", file=sys.stderr)
        return 127
    except PermissionError:
        print(f"poolmon run: permission denied: {command[0]}", file=sys.stderr)
        return 126
