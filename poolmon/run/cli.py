"""`poolmon run` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="Run a Python program with every installed pool instrumented (not yet implemented)",
        description="Run a Python program with every installed pool instrumented (not yet implemented)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("poolmon run: not implemented yet", file=sys.stderr)
    return 2
