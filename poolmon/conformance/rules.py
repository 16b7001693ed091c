"""The conformance checker's rules and the :class:`Problem` it reports.

Rule ids are stable strings (they appear in output, in spec/examples/invalid/expected.json and in
spec/README.md); a rule is never renamed within a major version of the standard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["RULES", "Problem"]

#: Rule id -> what it checks. Line-level rules first, then schema, then the state machine.
RULES: Final[Mapping[str, str]] = {
    "line-too-long": "a line longer than 64 KiB (reported, not parsed)",
    "encoding": "a line that is not valid UTF-8",
    "json": "a line that is not one JSON value (NaN and Infinity are not JSON)",
    "not-object": "a JSON value that is not an object",
    "schema": "an event that does not match spec/event.schema.json",
    "duplicate-create": "a create of a connection id the pool already used",
    "borrow-used": "a borrow of a connection that is already borrowed",
    "return-without-borrow": "a return of a connection that is idle",
    "after-evict": "any event about a connection after its evict",
    "validate-not-evicted": "a failed validate not followed by the evict of that connection",
    "over-max": "idle + used connections above the max of the pool's open event",
    "pending-negative": "a wait resolved (queued borrow, error in phase wait) with none pending",
    "pending-mismatch": "a wait event whose pending count is not the previous count + 1",
    "redundant-error": "an error event of type create_failed or validation_failed "
    "(those are counted from create/validate events with outcome error)",
    "pending-unresolved": "a close of a pool while waits it reported are still unresolved",
    "streams-over-limit": "a borrow of a multiplexed connection whose streams in use are already "
    "at its limit (1.1)",
    "streams-mismatch": "a borrow or return whose streams count is not the previous count + 1 "
    "or - 1 (1.1)",
    "streams-undeclared": "a streams count on a connection that declared no stream limit (1.1)",
    "internal": "the checker failed on this line (a bug in the checker; please report it)",
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One violation: the 1-based line it is reported at, the rule id and a readable message."""

    line: int
    rule: str
    message: str

    def format(self, filename: str) -> str:
        """``FILE:LINE: RULE: message``, the checker's output form."""
        return f"{filename}:{self.line}: {self.rule}: {self.message}"
