"""`poolmon demo` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Run the embedded demo workload and watch it in poolmon top (not yet implemented)",
        description="Run the embedded demo workload and watch it in poolmon top (not yet implemented)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("poolmon demo: not implemented yet", file=sys.stderr)
    return 2
