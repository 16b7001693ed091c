"""The per-connection state machine of the standard, checked over a stream of events.

Events are grouped by pool instance: the pair ``(pool, pid)``. An ``open`` event starts a fresh
instance under that key (a new pool may take the name of a dropped one, and connection ids restart),
so the checker forgets what it knew about the previous one.

Per connection::

    create(ok) -> idle      borrow: idle -> used      return: used -> idle
    evict: idle|used -> gone (final)                  validate: keeps the state;
    a failed validate must be followed by the evict of that connection (its next event).

A *multiplexed* connection (spec 1.1, section 15: it declared ``max_streams`` on its create or
a borrow) counts its streams ``n``: a borrow needs ``n < max_streams`` and makes it ``n + 1``, a
return needs ``n >= 1`` and makes it ``n - 1``; each must report the new count in ``streams``. It
is used while ``n >= 1``. A connection that never declared a limit follows the 1.0 machine above.

A connection first seen in an event other than ``create`` existed before the stream began (it was
adopted by instrumentation, or the subscriber attached late); the checker takes its earlier state to
be whatever that first event requires. Connections it knows are checked strictly.

Memory: the checker keeps every evicted id to catch reuse, so it grows with the number of
connections in the stream (never with the number of events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from poolmon.conformance.rules import Problem

__all__ = ["StateMachine"]

IDLE: Final = "idle"
USED: Final = "used"
UNKNOWN: Final = "unknown"  # adopted by a validate: idle or used, the stream did not say

_COUNTED_ELSEWHERE: Final = frozenset({"create_failed", "validation_failed"})


@dataclass(slots=True)
class _Pool:
    max: int | None = None
    pending: int = 0
    conns: dict[int, str] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)
    failed: dict[int, int] = field(default_factory=dict)  # conn -> line of its failed validate
    limits: dict[int, int] = field(default_factory=dict)  # multiplexed conn -> its stream limit
    streams: dict[int, int] = field(default_factory=dict)  # multiplexed conn -> streams in use


class StateMachine:
    """Feed schema-valid events in stream order; collect the problems found."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, int | None], _Pool] = {}

    def feed(self, line: int, event: Mapping[str, Any]) -> list[Problem]:
        """Check one event (already valid against the schema) reported at ``line``."""
        kind = event["kind"]
        key = (event["pool"], event.get("pid"))
        if kind == "open":
            self._pools[key] = _Pool(max=event.get("max"), pending=event.get("pending", 0))
            return []
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
        conn = event.get("conn")
        problems: list[Problem] = []
        # A create of a known id is a duplicate-create (in _create), whatever became of the id.
        if conn is not None and kind != "create":
            if conn in pool.gone:
                return [
                    Problem(line, "after-evict", f"{kind} of connection {conn} after its evict")
                ]
            failed_at = pool.failed.get(conn)
            if failed_at is not None and kind != "evict":
                del pool.failed[conn]
                problems.append(
                    Problem(
                        line,
                        "validate-not-evicted",
                        f"connection {conn} failed validation on line {failed_at} and must be "
                        f"evicted next, got {kind}",
                    )
                )
        handler = _HANDLERS.get(kind)
        if handler is not None:
            problems.extend(handler(pool, line, event))
        return problems

    def finish(self) -> list[Problem]:
        """Problems only the end of the stream reveals (failed validations never evicted)."""
        problems = [
            Problem(
                failed_at,
                "validate-not-evicted",
                f"connection {conn} failed validation and was never evicted",
            )
            for pool in self._pools.values()
            for conn, failed_at in pool.failed.items()
        ]
        problems.sort(key=lambda p: p.line)
        return problems


def _over_max(pool: _Pool, line: int) -> list[Problem]:
    total = len(pool.conns)
    if pool.max is not None and total > pool.max:
        return [
            Problem(
                line,
                "over-max",
                f"{total} connections open (idle + used), above the pool's max of {pool.max}",
            )
        ]
    return []


def _resolve_wait(pool: _Pool, line: int, what: str) -> list[Problem]:
    if pool.pending <= 0:
        return [Problem(line, "pending-negative", f"{what} resolves a wait but none is pending")]
    pool.pending -= 1
    return []


def _create(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    if event["outcome"] != "ok":
        return []  # a failed create has no connection (the schema forbids conn)
    conn = event["conn"]
    if conn in pool.conns or conn in pool.gone:
        return [Problem(line, "duplicate-create", f"connection id {conn} was already created")]
    pool.conns[conn] = IDLE
    limit = event.get("max_streams")
    if limit is not None:
        pool.limits[conn] = limit
        pool.streams[conn] = 0
    return _over_max(pool, line)


def _validate(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    conn = event["conn"]
    problems: list[Problem] = []
    if conn not in pool.conns:
        pool.conns[conn] = UNKNOWN
        problems = _over_max(pool, line)
    if event["outcome"] == "error":
        pool.failed[conn] = line
    return problems


def _wait(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    expected = pool.pending + 1
    reported = event["pending"]
    # Resynchronise on the producer's count so one slip is reported once, not on every later wait.
    pool.pending = reported
    if reported != expected:
        return [
            Problem(
                line,
                "pending-mismatch",
                f"wait reports pending={reported}, expected {expected} (previous count + 1)",
            )
        ]
    return []


def _undeclared(conn: int, line: int, event: Mapping[str, Any]) -> list[Problem]:
    return [
        Problem(
            line,
            "streams-undeclared",
            f"{event['kind']} reports streams={event['streams']} for connection {conn}, "
            "which declared no stream limit (max_streams)",
        )
    ]


def _stream_count(
    pool: _Pool, line: int, event: Mapping[str, Any], conn: int, expected: int
) -> list[Problem]:
    """Record the multiplexed connection's new count (the producer's, when it differs)."""
    reported = event.get("streams")
    problems: list[Problem] = []
    if reported != expected:
        what = "no streams count" if reported is None else f"streams={reported}"
        problems.append(
            Problem(
                line,
                "streams-mismatch",
                f"{event['kind']} of multiplexed connection {conn} reports {what}, "
                f"expected {expected}",
            )
        )
    count = expected if reported is None else reported  # resynchronise: report a slip once
    pool.streams[conn] = count
    pool.conns[conn] = USED if count else IDLE
    return problems


def _borrow_stream(
    pool: _Pool, line: int, event: Mapping[str, Any], state: str | None
) -> list[Problem]:
    conn = event["conn"]
    reported = event.get("streams")
    n = pool.streams.get(conn)
    if n is None:  # first seen, or multiplexed from this borrow on (section 15)
        if state is None:
            n = max(reported - 1, 0) if reported is not None else 0
        else:
            n = 1 if state == USED else 0
    limit = pool.limits[conn]
    problems: list[Problem] = []
    if n >= limit:
        problems.append(
            Problem(
                line,
                "streams-over-limit",
                f"connection {conn} already has {n} streams in use, its limit is {limit}",
            )
        )
    problems.extend(_stream_count(pool, line, event, conn, n + 1))
    if state is None:
        problems.extend(_over_max(pool, line))
    if event.get("queued"):
        problems.extend(_resolve_wait(pool, line, "queued borrow"))
    return problems


def _return_stream(
    pool: _Pool, line: int, event: Mapping[str, Any], state: str | None
) -> list[Problem]:
    conn = event["conn"]
    reported = event.get("streams")
    n = pool.streams.get(conn)
    if n is None:
        if state is None:
            n = reported + 1 if reported is not None else 1
        else:
            n = 1 if state == USED else 0
    if n <= 0:
        pool.streams[conn] = 0
        pool.conns[conn] = IDLE
        return [
            Problem(
                line,
                "return-without-borrow",
                f"multiplexed connection {conn} has no stream in use",
            )
        ]
    problems = _stream_count(pool, line, event, conn, n - 1)
    if state is None:
        problems.extend(_over_max(pool, line))
    return problems


def _borrow(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    conn = event["conn"]
    state = pool.conns.get(conn)
    limit = event.get("max_streams")
    if limit is not None:
        pool.limits[conn] = limit
    if conn in pool.limits:
        return _borrow_stream(pool, line, event, state)
    problems: list[Problem] = []
    if event.get("streams") is not None:
        problems.extend(_undeclared(conn, line, event))
    if state == USED:
        problems.append(Problem(line, "borrow-used", f"connection {conn} is already borrowed"))
    pool.conns[conn] = USED
    if state is None:
        problems.extend(_over_max(pool, line))
    if event.get("queued"):
        problems.extend(_resolve_wait(pool, line, "queued borrow"))
    return problems


def _return(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    conn = event["conn"]
    state = pool.conns.get(conn)
    if conn in pool.limits:
        return _return_stream(pool, line, event, state)
    problems: list[Problem] = []
    if event.get("streams") is not None:
        problems.extend(_undeclared(conn, line, event))
    pool.conns[conn] = IDLE
    if state == IDLE:
        problems.append(
            Problem(line, "return-without-borrow", f"connection {conn} is idle, not borrowed")
        )
    elif state is None:
        problems.extend(_over_max(pool, line))
    return problems


def _evict(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    conn = event["conn"]
    pool.conns.pop(conn, None)
    pool.failed.pop(conn, None)
    pool.limits.pop(conn, None)
    pool.streams.pop(conn, None)
    pool.gone.add(conn)
    return []


def _close(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    # Spec 1.1, section 13.2: every wait is resolved before the pool closes (timeout, cancelled
    # or pool_closed in phase wait). A stream that merely ends is not flagged: it may be cut live.
    if pool.pending > 0:
        waits = "wait is" if pool.pending == 1 else "waits are"
        unresolved = pool.pending
        pool.pending = 0  # reported once; a later close of the same instance starts clean
        return [
            Problem(
                line,
                "pending-unresolved",
                f"the pool closed while {unresolved} {waits} still pending (resolve each with "
                "a queued borrow or an error in phase wait before close)",
            )
        ]
    return []


def _error(pool: _Pool, line: int, event: Mapping[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    error_type = event["error_type"]
    if error_type in _COUNTED_ELSEWHERE:
        source = "create" if error_type == "create_failed" else "validate"
        problems.append(
            Problem(
                line,
                "redundant-error",
                f"{error_type} is reported by a {source} event with outcome error, "
                "never by an error event",
            )
        )
    if event["phase"] == "wait":
        problems.extend(_resolve_wait(pool, line, f"error {error_type} in phase wait"))
    return problems


_HANDLERS: Final = {
    "create": _create,
    "validate": _validate,
    "wait": _wait,
    "borrow": _borrow,
    "return": _return,
    "evict": _evict,
    "error": _error,
    "close": _close,
}
