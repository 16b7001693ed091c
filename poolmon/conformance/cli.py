"""`poolmon spec validate` (placeholder until the validator lands)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("spec", help="Work with the poolmon standard")
    sub = parser.add_subparsers(dest="spec_command", metavar="SUBCOMMAND")
    validate = sub.add_parser("validate", help="Check a JSONL event stream")
    validate.add_argument("file")
    validate.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("poolmon spec validate: not implemented yet", file=sys.stderr)
    return 2
