"""``poolmon run [options] -- COMMAND ...``: run a program with every installed pool
instrumented."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any, Final

from poolmon.exitstatus import USAGE, epilog, usage_error

__all__ = ["EXIT_STATUSES", "STATUSES", "register", "settings_from_args"]

_DESCRIPTION = """\
Run COMMAND (any Python program: python app.py, gunicorn ..., pytest ...) with every supported
installed connection pool instrumented (psycopg_pool, psycopg2.pool, SQLAlchemy, asyncpg,
redis-py, urllib3/requests, httpx/httpcore, aiohttp) and the chosen exporters running, without
changing its code. COMMAND replaces this process, so its exit code, stdin, stdout and stderr are
exactly its own.

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

#: Exit statuses and what they mean (docs/*.md lists the same; a test compares them).
STATUSES: Final[Mapping[int, str]] = {
    USAGE: "no COMMAND, or a bad option or POOLMON_* value (the message names the option "
    "or variable and what it accepts); COMMAND is not started",
    126: "COMMAND cannot be executed (permission denied)",
    127: "COMMAND not found",
}
EXIT_STATUSES: Final = epilog(
    STATUSES, before="Otherwise the exit status is COMMAND's own (it replaces this process)."
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="Run a Python program with every installed pool instrumented",
        description=_DESCRIPTION,
        epilog=f"{_EPILOG}\n{EXIT_STATUSES}",
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


#: The option that stands for each variable, so an error names what the user typed.
_OPTION_OF: Final = {
    "POOLMON_EXPORTERS": "--exporter",
    "POOLMON_PROMETHEUS_PORT": "--port",
    "POOLMON_PROMETHEUS_ADDR": "--addr",
    "POOLMON_JSONL_PATH": "--jsonl",
    "POOLMON_OTLP_ENDPOINT": "--otlp-endpoint",
    "POOLMON_SEMCONV": "--semconv",
    "POOLMON_LEAK_THRESHOLD": "--leak-threshold",
    "POOLMON_RUN_INFO": "--info-file",
}


def _check(env: Mapping[str, str], given: Mapping[str, str] | None = None) -> str | None:
    """The configuration error the program would meet, as a message (None: fine).

    ``given`` are the variables that came from options: an error in one of them names the option.
    """
    from poolmon.errors import ConfigError
    from poolmon.exporters.config import ExporterConfig

    try:
        ExporterConfig.from_env(env)
    except ConfigError as exc:
        option = _OPTION_OF.get(exc.parameter)
        if option is not None and exc.parameter in (given or {}):
            return str(ConfigError(option, exc.value, exc.accepted))
        return str(exc)
    return None


def _check_options(args: argparse.Namespace) -> str | None:
    """What the options name that the program could not use (the paths it will write)."""
    from poolmon.errors import ConfigError

    if args.exporter is not None and not settings_from_args(args).get("POOLMON_EXPORTERS"):
        return str(ConfigError("--exporter", ",".join(args.exporter), _EXPORTERS_ACCEPTED))
    for option, path in (("--jsonl", args.jsonl), ("--info-file", args.info_file)):
        problem = _unwritable(path) if path else None
        if problem is not None:
            return str(ConfigError(option, path, f"a file path that can be written ({problem})"))
    return None


def _check_paths(env: Mapping[str, str], given: Mapping[str, str]) -> str | None:
    from poolmon.errors import ConfigError

    path = env.get("POOLMON_JSONL_PATH")
    if path and "POOLMON_JSONL_PATH" not in given and "jsonl" in env.get("POOLMON_EXPORTERS", ""):
        problem = _unwritable(path)
        if problem is not None:
            return str(
                ConfigError(
                    "POOLMON_JSONL_PATH", path, f"a file path that can be written ({problem})"
                )
            )
    return None


def _unwritable(path: str) -> str | None:
    """Why a file cannot be created or appended to at ``path`` (None: it can, as far as a
    read-only look can tell)."""
    target = os.path.abspath(path)
    if os.path.isdir(target):
        return "it is a directory"
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        return (
            "its directory does not exist"
            if not os.path.exists(parent)
            else "its directory is a file"
        )
    if not os.access(parent, os.W_OK):
        return "its directory is not writable"
    return None


_EXPORTERS_ACCEPTED: Final = "prometheus, otlp or jsonl (repeat or comma-separate for several)"


def _run(args: argparse.Namespace) -> int:
    from poolmon.run.env import build_environment

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        return usage_error(
            "run", "COMMAND is missing: expected poolmon run [options] -- COMMAND ..."
        )
    given = settings_from_args(args)
    env = build_environment(given)
    problem = _check_options(args) or _check(env, given) or _check_paths(env, given)
    if problem is not None:
        return usage_error("run", problem)
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
