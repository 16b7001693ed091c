"""`poolmon dashboards build`: write (or check) the generated Grafana dashboards.

The Grafana SDK is imported inside the handler only, so ``poolmon --help`` works without the
``dashboards`` extra and a missing SDK gets an install hint instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "register"]

_INSTALL_HINT = (
    "poolmon dashboards needs grafana-foundation-sdk: pip install 'poolmon[dashboards]' "
    "(Python >= 3.11)"
)


def default_output() -> Path:
    """``dashboards/`` of the source checkout when run from one, else ``./dashboards``."""
    checkout = Path(__file__).resolve().parents[2] / "dashboards"
    return checkout if (checkout / "rules").is_dir() else Path("dashboards")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboards",
        help="Build the Grafana dashboards from code",
        description="Generate poolmon's Grafana dashboards (JSON) with grafana-foundation-sdk.",
    )
    actions = parser.add_subparsers(dest="dashboards_command", metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="Write the dashboard JSON (or --check that the files are up to date)",
        description="Write the dashboard JSON files, or with --check verify them and lint them.",
    )
    build.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="directory for the JSON files (default: the checkout's dashboards/ or ./dashboards)",
    )
    build.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file differs from the generator's output or fails lint",
    )
    build.set_defaults(func=_run)
    parser.set_defaults(func=_usage(parser))


def _usage(parser: argparse.ArgumentParser) -> Any:
    def handler(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return handler


def _run(args: argparse.Namespace) -> int:
    try:
        from poolmon.dashboards import generator
    except ImportError as exc:
        print(f"{_INSTALL_HINT} ({exc})", file=sys.stderr)
        return 2
    from poolmon.dashboards.lint import lint_dashboard

    output: Path = args.output if args.output is not None else default_output()
    files = generator.dashboard_files()
    if not args.check:
        for path in generator.write(output):
            print(f"wrote {path}")
        return 0
    status = 0
    for name, text in files.items():
        path = output / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path}: differs from the generator; run `poolmon dashboards build`")
            status = 1
            continue
        for problem in lint_dashboard(json.loads(text)):
            print(f"{path}: {problem}")
            status = 1
    if status == 0:
        print(f"{len(files)} dashboard(s) in {output} are up to date and lint-clean")
    return status


def main(argv: list[str] | None = None) -> int:
    """Entry for ``python -m dashboards``: ``poolmon dashboards`` with its own arguments."""
    from poolmon.cli import main as poolmon_main

    args = list(sys.argv[1:] if argv is None else argv) or ["build"]
    return poolmon_main(["dashboards", *args])
