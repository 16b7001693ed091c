"""`poolmon dashboards` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboards",
        help="Build the Grafana dashboards (not yet implemented)",
        description="Build the Grafana dashboards (not yet implemented)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("poolmon dashboards: not implemented yet", file=sys.stderr)
    return 2
