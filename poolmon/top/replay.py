"""Replaying a JSONL event stream into ledgers, so ``top`` can show a recorded (or growing) log.

Each line is one event of spec/event.schema.json. Events are applied to a :class:`PoolLedger` per
``(pool, pid)`` in a private :class:`PoolRegistry` whose :class:`ManualClock` is moved to each
event's timestamp first, so durations, ages and the oldest borrow come out as they were recorded.
Connection ids in the file are mapped to the ledger's own ids (the ledger hands out its own).

The file is read incrementally: :meth:`JsonlReplay.poll` applies only the complete lines appended
since the previous call, so pointing ``top --replay`` at a log another process is writing shows
it live, like ``tail -f``. A line that is not valid JSON or not a known event is counted in
:attr:`JsonlReplay.skipped` and otherwise ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Final

from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry

__all__ = ["MAX_PROBLEMS", "JsonlReplay", "Observer"]

_READ_CHUNK: Final = 1 << 20


#: ``(event, ledger)`` after each applied event (``poolmon doctor`` keeps event times with it).
Observer = Callable[[Mapping[str, Any], PoolLedger], None]

#: How many bad lines :attr:`JsonlReplay.problems` keeps (the count goes on in ``skipped``).
MAX_PROBLEMS: Final = 20


class JsonlReplay:
    """Incremental replay of one JSONL file. Not thread-safe (one reader)."""

    def __init__(self, path: str | Path, *, observer: Observer | None = None) -> None:
        self.path = Path(path)
        self.observer = observer
        #: ``(line number, reason)`` of the first skipped lines.
        self.problems: list[tuple[int, str]] = []
        self.lines = 0
        self.clock = ManualClock(start=0.0, wall_start=0.0)
        self.registry = PoolRegistry(clock=self.clock)
        self.skipped = 0
        self.applied = 0
        #: Line number and reason of the first line skipped (None: none was).
        self.first_skipped: tuple[int, str] | None = None
        self._offset = 0
        self._partial = b""
        self._ledgers: dict[tuple[str, object], PoolLedger] = {}
        self._conns: dict[tuple[str, object], dict[object, int]] = {}
        self._started = False

    @property
    def event_time(self) -> float:
        """Timestamp of the latest event applied (seconds since the epoch; 0 before any)."""
        return self.clock.wall()

    def poll(self) -> int:
        """Apply the complete lines appended since the last call; returns how many were applied.

        Raises ``OSError`` when the file cannot be read (the source reports itself down).
        """
        applied = 0
        with open(self.path, "rb") as stream:
            stream.seek(self._offset)
            while True:
                chunk = stream.read(_READ_CHUNK)
                if not chunk:
                    break
                self._offset += len(chunk)
                data = self._partial + chunk
                lines = data.split(b"\n")
                self._partial = lines.pop()  # incomplete last line: wait for the rest
                for raw in lines:
                    self.lines += 1
                    if raw.strip():
                        applied += self._apply_line(raw)
        self.applied += applied
        return applied

    def _apply_line(self, raw: bytes) -> int:
        try:
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise ValueError("not an object")
            self._apply(event)
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError) as exc:
            self.skipped += 1
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append((self.lines, _reason(exc)))
            if self.first_skipped is None:
                reason = "not JSON" if isinstance(exc, (ValueError, RecursionError)) else None
                if isinstance(exc, ValueError) and str(exc) == "not an object":
                    reason = "not a JSON object"
                self.first_skipped = (self.lines, reason or "not a poolmon event")
            return 0
        return 1

    def _advance_to(self, ts: float) -> None:
        if not self._started:
            # Both readings start at the first event: monotonic differences equal wall ones.
            self.clock = ManualClock(start=ts, wall_start=ts)
            self.registry = PoolRegistry(clock=self.clock)
            self._started = True
            return
        delta = ts - self.clock.wall()
        if delta > 0:  # events from several threads may be a hair out of order: never go back
            self.clock.advance(delta)

    def _ledger(self, event: Mapping[str, Any]) -> PoolLedger:
        key = (str(event["pool"]), event.get("pid"))
        ledger = self._ledgers.get(key)
        if ledger is None:
            ledger = self.registry.register(_identity(event))
            self._ledgers[key] = ledger
            self._conns[key] = {}
        return ledger

    def _conn(self, event: Mapping[str, Any], ledger: PoolLedger) -> int:
        key = (str(event["pool"]), event.get("pid"))
        conns = self._conns[key]
        raw = event.get("conn")
        conn = conns.get(raw)
        if conn is None:
            conn = conns[raw] = ledger.adopt()
        return conn

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event["kind"]
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise KeyError(kind)
        ts = float(event["ts"])
        if not math.isfinite(ts) or not isinstance(event.get("pool"), str):
            raise TypeError("ts or pool")  # the schema's types: a finite time, a pool name
        self._advance_to(ts)
        ledger = self._ledger(event)
        handler(self, event, ledger)
        if self.observer is not None:
            self.observer(event, ledger)

    # ---------------------------------------------------------------- one method per event kind

    def _open(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        resource = event.get("resource")
        if isinstance(resource, str) and resource != ledger.identity.resource:
            ledger.identity = replace(ledger.identity, resource=resource)
        shared_max = _int(event.get("shared_max"))
        if shared_max is not None and shared_max != ledger.identity.shared_max:
            ledger.identity = replace(ledger.identity, shared_max=shared_max)
        ledger.set_limits(
            max_size=_int(event.get("max")),
            min_size=_int(event.get("min")),
            idle_max=_int(event.get("idle_max")),
        )

    def _create(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        t0 = self.clock.monotonic() - float(event.get("duration") or 0.0)
        if event.get("outcome", "ok") == "error":
            ledger.create_failed(t0, _text(event.get("message")))
            return
        key = (str(event["pool"]), event.get("pid"))
        self._conns[key][event.get("conn")] = ledger.create(
            t0, max_streams=_int(event.get("max_streams"))
        )

    def _validate(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        t0 = self.clock.monotonic() - float(event.get("duration") or 0.0)
        ledger.validate(self._conn(event, ledger), t0, ok=event.get("outcome", "ok") == "ok")

    def _wait(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        ledger.wait()

    def _borrow(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        waited = float(event.get("duration") or 0.0)
        t0 = self.clock.monotonic() - waited if waited else None
        queued = bool(event.get("queued"))
        if event.get("streams") is not None:  # a stream of a multiplexed connection (spec 1.1)
            limit = _int(event.get("max_streams"))
            ledger.borrow_stream(self._conn(event, ledger), t0, queued=queued, max_streams=limit)
            return
        ledger.borrow(self._conn(event, ledger), t0, queued=queued)

    def _return(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        if event.get("streams") is not None:
            # The stream's start from its use time: the replay's clock is the event's time.
            started = self.clock.monotonic() - float(event.get("duration") or 0.0)
            ledger.release_stream(self._conn(event, ledger), started)
            return
        ledger.release(self._conn(event, ledger))

    def _evict(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        key = (str(event["pool"]), event.get("pid"))
        conn = self._conn(event, ledger)
        ledger.evict(conn, str(event.get("reason") or "other"))
        self._conns[key].pop(event.get("conn"), None)

    def _error(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        raw_conn = event.get("conn")
        duration = event.get("duration")
        ledger.error(
            str(event.get("error_type") or "other"),
            str(event.get("phase") or "borrow"),
            _text(event.get("message")),
            conn=None if raw_conn is None else self._conn(event, ledger),
            duration=None if duration is None else float(duration),
        )

    def _close(self, event: Mapping[str, Any], ledger: PoolLedger) -> None:
        ledger.close()

    #: The handler of each event kind (a table, so no other method is reachable by a kind).
    _HANDLERS: ClassVar[Mapping[str, Callable[[JsonlReplay, Mapping[str, Any], PoolLedger], None]]]
    _HANDLERS = {
        "open": _open,
        "create": _create,
        "validate": _validate,
        "wait": _wait,
        "borrow": _borrow,
        "return": _return,
        "evict": _evict,
        "error": _error,
        "close": _close,
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, KeyError):
        return f"missing or unknown field {scrub(str(exc))}"
    return scrub(f"not a valid event ({exc})")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return None if value is None else scrub(str(value))


def _identity(event: Mapping[str, Any]) -> PoolIdentity:
    port = event.get("server_port")
    pid = event.get("pid")
    return PoolIdentity(
        name=scrub(str(event["pool"])),
        system=str(event.get("system") or "generic"),
        server_address=event.get("server_address"),
        server_port=port if isinstance(port, int) else None,
        namespace=event.get("namespace"),
        library=event.get("library"),
        library_version=event.get("library_version"),
        pid=pid if isinstance(pid, int) else 0,
        resource=str(event.get("resource") or "connection"),
        shared_max=_int(event.get("shared_max")),
    )
