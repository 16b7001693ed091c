"""The ``poolmon`` command.

Each subcommand lives in its own module exposing ``register(subparsers) -> None``; the module must
not import optional dependencies at import time (only inside its handler), so ``poolmon --help``
works with the base install and a missing extra gets a clear "install poolmon[...]" message.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Final

__all__ = ["build_parser", "main"]

#: Modules that add subcommands, in the order ``--help`` lists them.
COMMAND_MODULES: Final = (
    "poolmon.demo.cli",
    "poolmon.top.cli",
    "poolmon.doctor.cli",
    "poolmon.run.cli",
    "poolmon.conformance.cli",
    "poolmon.dashboards.cli",
    "poolmon.backends.cli",
)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("poolmon")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolmon",
        description=(
            "Observe connection pools: run the demo, watch pools live, run a program with every "
            "installed pool instrumented, check event streams against the poolmon standard."
        ),
        epilog="Run 'poolmon COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"poolmon {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "func", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
