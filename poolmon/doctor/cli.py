"""``poolmon doctor``: findings and sizing advice from /metrics URLs, Prometheus or JSONL logs.

Imports rich and the doctor's readers only inside the handler, so ``poolmon --help`` works
without the ``top`` extra. Every threshold of :class:`~poolmon.doctor.thresholds.Thresholds` is
also a flag (``--saturation 0.8``), generated from the dataclass.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

__all__ = ["parse_duration", "register"]

_EPILOG: Final = """\
Sources: a /metrics URL (host:port is enough), a JSONL event log (a file path), or
--prometheus URL with --window. Backend limits: --backend DSN reads PostgreSQL's
max_connections (minus reserved) or Redis' maxclients; --limit HOST:PORT=N states one.
Thresholds: docs/doctor.md lists each with its default and range; set them with
--thresholds FILE.toml ([thresholds] table) or one flag each (--saturation 0.8).

Exit status:
  0  no finding at or above --fail-on
  1  findings at or above --fail-on
  2  bad usage (an unknown flag, a bad threshold value) or no source could be read
"""

_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``24h``, ``7d`` -> seconds (``ConfigError`` otherwise)."""
    from poolmon.errors import ConfigError

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError("--window", text, "a positive duration like 90s, 30m, 24h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="Findings and sizing advice from what the pools did",
        description=(
            "Diagnose connection pools: undersized, oversized, connection storms, churn,\n"
            "leaks (with the borrow site), slow connects, silent breakage, refusals and\n"
            "timeouts, and fleet over-commit against a backend's real limit. Advice is in\n"
            "each pool library's own configuration terms."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sources", nargs="*", metavar="SOURCE", help="/metrics URLs or JSONL files")
    parser.add_argument(
        "--prometheus", metavar="URL", action="append", default=[], help="a Prometheus server"
    )
    parser.add_argument("--window", default="1h", metavar="DURATION", help="Prometheus window (1h)")
    parser.add_argument(
        "--backend",
        metavar="DSN",
        action="append",
        default=[],
        help="read this backend's connection limit",
    )
    parser.add_argument(
        "--limit", metavar="HOST:PORT=N", action="append", default=[], help="a backend's limit"
    )
    parser.add_argument("--thresholds", metavar="FILE", help="a TOML file of thresholds")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--fail-on",
        choices=("info", "warning", "critical"),
        default="critical",
        help="exit 1 from this severity",
    )
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per source (5)")
    from poolmon.doctor.thresholds import Thresholds  # pure data, no optional dependency

    group = parser.add_argument_group("thresholds (defaults in docs/doctor.md)")
    for f in fields(Thresholds):
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest="th_" + f.name,
            metavar="N",
            default=None,
            help=f"{f.metadata['doc']} ({f.default})",
        )
    parser.set_defaults(func=_run)


def _thresholds(args: argparse.Namespace) -> Any:
    from poolmon.doctor.thresholds import Thresholds, load_toml
    from poolmon.errors import ConfigError

    thresholds = Thresholds()
    if args.thresholds:
        thresholds = thresholds.with_overrides(load_toml(args.thresholds))
    for f in fields(Thresholds):
        flag = getattr(args, "th_" + f.name)
        if flag is None:
            continue
        try:
            thresholds = thresholds.with_overrides({f.name: flag})
        except ConfigError as exc:  # name the option as typed, not the table's key
            raise ConfigError("--" + f.name.replace("_", "-"), exc.value, exc.accepted) from None
    return thresholds


def _run(args: argparse.Namespace, console: Any | None = None) -> int:
    """The handler; ``console`` (a rich Console) is injectable, default: stdout."""
    from poolmon.errors import ConfigError

    try:
        from rich.console import Console

        from poolmon.doctor.backend import parse_limit
        from poolmon.doctor.diagnose import diagnose
        from poolmon.doctor.render import report_json, report_view
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(
            f"poolmon doctor needs the 'top' extra: pip install 'poolmon[top]' ({exc})",
            file=sys.stderr,
        )
        return 2
    try:
        thresholds = _thresholds(args)
        window = parse_duration(args.window)
        if not 0 < args.timeout <= 300:
            raise ConfigError("--timeout", args.timeout, "seconds within (0, 300]")
        limits = [parse_limit(item) for item in args.limit]
    except ConfigError as exc:
        print(f"poolmon doctor: {exc}", file=sys.stderr)
        return 2
    urls = [s for s in args.sources if not _is_file(s)]
    files = [s for s in args.sources if _is_file(s)]
    if not (urls or files or args.prometheus):
        from poolmon.top.cli import DEFAULT_URL

        urls = [DEFAULT_URL]
    report = diagnose(
        urls=urls,
        prometheus=args.prometheus,
        jsonl=files,
        window=window,
        backends=args.backend,
        limits=limits,
        thresholds=thresholds,
        timeout=args.timeout,
    )
    console = getattr(args, "console", None) or Console(width=None if sys.stdout.isatty() else 120)
    if args.json:
        console.print_json(report_json(report)) if sys.stdout.isatty() else print(
            report_json(report)
        )
    else:
        console.print(report_view(report))
    if report.sources and all(
        any(p.down and p.source == s for p in report.problems) for s in report.sources
    ):
        return 2
    return 1 if report.at_or_above(args.fail_on) else 0


def _is_file(source: str) -> bool:
    if "://" in source:
        return False
    return source.endswith((".jsonl", ".json", ".log")) or Path(source).is_file()
