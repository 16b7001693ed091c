"""`poolmon dashboards build`: write (or check) the generated Grafana dashboards.

The Grafana SDK is imported inside the handler only, so ``poolmon --help`` works without the
``dashboards`` extra and a missing SDK gets an install hint instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from poolmon.errors import ConfigError
from poolmon.exitstatus import FAILED, OK, USAGE, HelpFormatter, epilog, usage_error

__all__ = ["EXIT_STATUSES", "STATUSES", "main", "register"]

#: Exit statuses and what they mean (docs/*.md lists the same; a test compares them).
STATUSES: Final[Mapping[int, str]] = {
    OK: "written, or (--check) every file is up to date and lint-clean",
    FAILED: "--check: a file differs from the generator's output or fails lint",
    USAGE: "bad option, unusable --output (not a directory, cannot be created or read), "
    "or the dashboards extra is missing",
}
EXIT_STATUSES: Final = epilog(STATUSES)
_COMMAND: Final = "dashboards build"

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
        epilog=EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    build.add_argument(
        "--output",
        "-o",
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

    if args.output is not None and not args.output.strip():
        return usage_error(_COMMAND, str(ConfigError("--output", "", "a directory path")))
    output = Path(args.output) if args.output is not None else default_output()
    problem = _unusable(output)
    if problem is not None:
        return usage_error(_COMMAND, str(ConfigError("--output", str(output), problem)))
    files = generator.dashboard_files()
    if not args.check:
        try:
            written = generator.write(output)
        except OSError as exc:
            return usage_error(
                _COMMAND,
                str(ConfigError("--output", str(output), f"a writable directory ({_reason(exc)})")),
            )
        for path in written:
            print(f"wrote {path}")
        return OK
    status = OK
    for name, text in files.items():
        path = output / name
        try:
            current = path.read_text(encoding="utf-8") if path.exists() else None
        except (OSError, UnicodeDecodeError) as exc:
            accepted = f"a directory of readable dashboard files ({path.name}: {_reason(exc)})"
            return usage_error(_COMMAND, str(ConfigError("--output", str(output), accepted)))
        if current != text:
            print(f"{path}: differs from the generator; run `poolmon dashboards build`")
            status = FAILED
            continue
        for finding in lint_dashboard(json.loads(text)):
            print(f"{path}: {finding}")
            status = FAILED
    if status == OK:
        print(f"{len(files)} dashboard(s) in {output} are up to date and lint-clean")
    return status


def _unusable(output: Path) -> str | None:
    """Why ``output`` cannot be the dashboards directory (None: it can, or may be created)."""
    text = str(output)
    if "\x00" in text:
        return "a directory path (without NUL bytes)"
    try:
        if output.exists() and not output.is_dir():
            return "a directory (this is a file)"
    except OSError as exc:
        return f"a directory path ({_reason(exc)})"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry for ``python -m dashboards``: ``poolmon dashboards`` with its own arguments."""
    from poolmon.cli import main as poolmon_main

    args = list(sys.argv[1:] if argv is None else argv) or ["build"]
    return poolmon_main(["dashboards", *args])
