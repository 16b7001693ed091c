"""`poolmon top` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="Live terminal monitor of pools (not yet implemented)",
        description="Live terminal monitor of pools (not yet implemented)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("poolmon top: not implemented yet", file=sys.stderr)
    return 2
