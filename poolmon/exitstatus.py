"""Exit statuses of the ``poolmon`` commands, and the "exit status" section of their ``--help``.

Every command documents its statuses with :func:`epilog` (the same text goes into docs/*.md) and
reports a bad parameter with :func:`usage_error`: one line on stderr naming the parameter and what
is accepted, status :data:`USAGE`, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Mapping
from typing import IO, Final

__all__ = [
    "FAILED",
    "OK",
    "USAGE",
    "HelpFormatter",
    "epilog",
    "usage_error",
]

#: Success.
OK: Final = 0
#: The command ran and found something wrong (problems in a stream, no source answered, ...).
FAILED: Final = 1
#: A bad option, argument or ``POOLMON_*`` value, a missing extra, an unusable path (argparse's
#: own status for usage errors, so every usage problem has the same one).
USAGE: Final = 2

_WIDTH: Final = 78


def epilog(statuses: Mapping[int, str], *, before: str = "") -> str:
    """``before`` (kept as written) followed by an "exit status" section listing ``statuses``."""
    lines = [
        textwrap.fill(
            meaning, width=_WIDTH, initial_indent=f"  {code:<4d}", subsequent_indent=" " * 6
        )
        for code, meaning in sorted(statuses.items())
    ]
    section = "exit status:\n" + "\n".join(lines)
    return f"{before.rstrip()}\n\n{section}" if before else section


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, but text that contains line breaks (an epilog with an exit status
    section, an examples block) is kept as written; a one-paragraph description is wrapped."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def usage_error(command: str, message: str, *, err: IO[str] | None = None) -> int:
    """Write ``poolmon COMMAND: message`` as one line on stderr; returns :data:`USAGE`."""
    one_line = " ".join(str(message).split())
    stream = err if err is not None else sys.stderr
    stream.write(f"poolmon {command}: {one_line}\n")
    stream.flush()
    return USAGE
