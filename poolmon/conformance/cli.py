"""``poolmon spec validate FILE|-``: check a JSONL event stream against the standard.

Output: one ``FILE:LINE: RULE: message`` line per problem on stdout as it is found, then a summary
``N events, M problems``. Exit status: 0 clean, 1 problems found, 2 usage or I/O error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any, Final

from poolmon.conformance.rules import RULES
from poolmon.errors import ConfigError
from poolmon.exitstatus import FAILED, OK, USAGE, HelpFormatter, epilog, usage_error

__all__ = ["EXIT_STATUSES", "STATUSES", "register", "run_validate"]

#: Exit statuses and what they mean (docs/*.md lists the same; a test compares them).
STATUSES: Final[Mapping[int, str]] = {
    OK: "the stream is clean",
    FAILED: "problems were found (each printed as FILE:LINE: RULE: message)",
    USAGE: "a usage error, or FILE cannot be read (missing, a directory, unreadable)",
}
EXIT_STATUSES: Final = epilog(STATUSES)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "spec",
        help="Work with the poolmon standard",
        description="Work with the poolmon standard (spec/README.md).",
    )
    sub = parser.add_subparsers(dest="spec_command", metavar="SUBCOMMAND")
    rules = "\n".join(f"  {rule:22s} {text}" for rule, text in RULES.items())
    validate = sub.add_parser(
        "validate",
        help="Check a JSONL event stream (schema and per-connection state machine)",
        description=(
            "Check a JSONL event stream against spec/event.schema.json and the per-connection "
            "state machine. Prints FILE:LINE: RULE: message per problem, then 'N events, "
            "M problems'. Exit status 0 when clean, 1 when problems were found, 2 on a usage "
            "or I/O error."
        ),
        epilog=f"rules:\n{rules}\n\n{EXIT_STATUSES}",
        formatter_class=HelpFormatter,
    )
    validate.add_argument("file", metavar="FILE", help="a JSONL file, or - for standard input")
    validate.set_defaults(func=_run)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    return run_validate(args.file)


def run_validate(
    path: str,
    *,
    stdin: IO[bytes] | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    """Validate ``path`` (``-``: ``stdin``), writing problems to ``out``; the exit status."""
    from poolmon.conformance.validator import Validator, read_lines

    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    name = "<stdin>" if path == "-" else path
    validator = Validator()
    count = 0
    try:
        with _source(path, stdin) as source:
            for lineno, raw in read_lines(source):
                for problem in validator.check(lineno, raw):
                    count += 1
                    out.write(problem.format(name) + "\n")
        for problem in validator.finish():
            count += 1
            out.write(problem.format(name) + "\n")
        out.write(f"{validator.events} events, {count} problems\n")
        out.flush()
    except BrokenPipeError:
        return 1  # the reader went away (| head): nothing more to say
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__
        accepted = f"a readable JSONL file, or - for standard input ({reason})"
        return usage_error("spec validate", str(ConfigError("FILE", path, accepted)), err=err)
    return FAILED if count else OK


def _source(path: str, stdin: IO[bytes] | None) -> AbstractContextManager[IO[bytes]]:
    # Standard input is borrowed, not owned: it stays open for whoever runs us.
    if path == "-":
        return nullcontext(stdin if stdin is not None else sys.stdin.buffer)
    return open(path, "rb")
