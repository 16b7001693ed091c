"""The conformance kit for pool authors: drive a pool through scripted scenarios, check its events.

An author implements a small :class:`PoolAdapter` over their pool (open it, borrow, give back,
break a borrowed resource, close) and calls :func:`check` (or uses the pytest fixture
``pool_conformance``, :mod:`poolmon.conformance.pytest_plugin`). Each scenario opens a fresh
pool, runs, closes it, and the events the pool produced are checked by the standard's own checker
(:class:`~poolmon.conformance.validator.Validator`: schema and state machine) plus what the
scenario must have shown (a timeout scenario with no timeout is a failure too). A failure raises
:class:`ConformanceError` naming the scenario, the line of the captured stream and the rule.

Scenarios (:data:`SCENARIOS`), each against a pool of ``max_size`` 2:

``borrow``      borrow, give back, borrow again, give back
``contention``  4 threads x 10 cycles (callers queue; every wait must resolve)
``timeout``     both resources held, a third borrow must time out
``broken``      a borrowed resource is broken and given back: the pool must evict it, lend a
                working one next, and never mention the broken one again
``close``       a borrow and a return, then close: the pool closes with nothing pending

How events are captured: pools written against :mod:`poolmon.api` are bound to a capturing
recorder that writes each call *as made* (nothing is smoothed over, so a double return is seen);
pools that record into poolmon's registry (``poolmon.Pool``, the shims) are captured from a
private :class:`~poolmon.core.registry.PoolRegistry`, made the default for the run and handed to
the adapter's ``open``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from poolmon import api
from poolmon.conformance.rules import Problem
from poolmon.conformance.validator import Validator
from poolmon.core.events import PoolEvent
from poolmon.core.registry import PoolRegistry, set_default_registry

__all__ = [
    "EXPECTATIONS",
    "SCENARIOS",
    "CaptureRecorder",
    "ConformanceError",
    "Failure",
    "PoolAdapter",
    "Report",
    "check",
    "run",
]

SPEC: Final = api.SPEC_VERSION

#: Kit-level rules (beyond the checker's): what a scenario must have shown.
EXPECTATIONS: Final[Mapping[str, str]] = {
    "kit-no-events": "the scenario produced no event of the pool at all",
    "kit-no-borrow": "borrows were made but no borrow event was seen",
    "kit-no-timeout": "a borrow timed out but no error of type timeout in phase wait was seen",
    "kit-broken-not-evicted": "a broken resource was given back but never evicted",
    "kit-no-close": "the pool was closed but no close event was seen",
    "kit-adapter": "the adapter itself failed (the scenario could not run)",
}

#: Scenario names, in the order :func:`check` runs them.
SCENARIOS: Final = ("borrow", "contention", "timeout", "broken", "close")

MAX_SIZE: Final = 2
_THREADS: Final = 4
_CYCLES: Final = 10


class PoolAdapter(Protocol):
    """What a pool author implements for the kit (a handle is whatever the pool lends).

    ``open(max_size, registry)``: create a fresh pool of at most ``max_size`` resources; a pool
    that records into poolmon's registry (not through :mod:`poolmon.api`) uses ``registry``.
    ``borrow(timeout)``: block up to ``timeout`` seconds; raise (any exception) on timeout.
    ``give_back(handle)``: return it. ``break_resource(handle)``: make the borrowed resource
    broken (closed socket, dead worker) so the pool must discard it. ``close()``: close the pool.
    ``emits_close``: False for pools that have no close (the ``close`` event is then not expected).
    """

    emits_close: bool

    def open(self, max_size: int, registry: PoolRegistry) -> None: ...

    def borrow(self, timeout: float) -> Any: ...

    def give_back(self, handle: Any) -> None: ...

    def break_resource(self, handle: Any) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Failure:
    """One violation found in one scenario's captured stream."""

    scenario: str
    line: int
    rule: str
    message: str

    def format(self) -> str:
        return f"{self.scenario}: line {self.line}: {self.rule}: {self.message}"


class ConformanceError(AssertionError):
    """The pool's events break the standard; ``failures`` lists each violation (with its rule)."""

    def __init__(self, failures: Sequence[Failure], streams: Mapping[str, Sequence[str]]) -> None:
        self.failures = tuple(failures)
        self.streams = dict(streams)
        rules = sorted({f.rule for f in failures})
        lines = "\n".join(f"  {f.format()}" for f in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        super().__init__(f"pool does not conform ({', '.join(rules)}):\n{lines}{more}")

    @property
    def rules(self) -> set[str]:
        return {f.rule for f in self.failures}


class _Stream:
    """The events of one scenario, as JSON lines, in the order they were recorded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lines: list[str] = []

    def add(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str)
        with self.lock:
            self.lines.append(line)

    def add_event(self, event: PoolEvent) -> None:
        self.add(event.to_dict())


class CaptureRecorder:
    """A :class:`poolmon.api.Recorder` writing each tracker call as a spec event, as made.

    Unlike poolmon's ledger (which ignores a return of a connection it does not see borrowed),
    nothing is corrected here: the stream says exactly what the pool said.
    """

    def __init__(self, sink: Callable[[Mapping[str, Any]], None]) -> None:
        self._sink = sink

    def bind(self, tracker: api.Tracker) -> None:
        sink = self._sink
        pid = os.getpid()
        name = tracker.name
        clock = time.perf_counter
        lock = threading.Lock()
        state: dict[str, Any] = {"pending": 0, "born": {}, "since": {}}
        born: dict[int, float] = state["born"]
        since: dict[int, float] = state["since"]

        def emit(kind: str, **fields: Any) -> None:
            event = {"v": SPEC, "kind": kind, "ts": time.time(), "pool": name, "pid": pid}
            event.update((k, v) for k, v in fields.items() if v is not None)
            sink(event)

        def created(t0: float) -> int:
            cid = tracker.new_id()
            now = clock()
            with lock:
                born[cid] = now
                emit("create", conn=cid, duration=max(0.0, now - t0), outcome="ok")
            return cid

        def validated(conn: int, t0: float, *, ok: bool) -> None:
            with lock:
                emit(
                    "validate",
                    conn=conn,
                    duration=max(0.0, clock() - t0),
                    outcome="ok" if ok else "error",
                )

        def waiting() -> int:
            with lock:
                state["pending"] += 1
                emit("wait", pending=state["pending"])
                pending: int = state["pending"]
            return pending

        def borrowed(conn: int, t0: float | None = None, *, queued: bool = False) -> None:
            now = clock()
            with lock:
                since[conn] = now
                if queued:
                    state["pending"] = max(0, state["pending"] - 1)
                duration = 0.0 if t0 is None else max(0.0, now - t0)
                emit("borrow", conn=conn, duration=duration, queued=True if queued else None)

        def returned(conn: int) -> None:
            now = clock()
            with lock:
                start = since.pop(conn, now)
                emit("return", conn=conn, duration=max(0.0, now - start))

        def evicted(conn: int, reason: str) -> None:
            now = clock()
            with lock:
                start = born.pop(conn, now)
                since.pop(conn, None)
                emit("evict", conn=conn, reason=reason, age=max(0.0, now - start))

        def failed(
            error_type: str,
            phase: str = "borrow",
            error: BaseException | str | None = None,
            *,
            conn: int | None = None,
            t0: float | None = None,
        ) -> None:
            duration = None if t0 is None else max(0.0, clock() - t0)
            message = None if error is None else str(error)[:200]
            with lock:
                if error_type == "create_failed":
                    emit(
                        "create",
                        duration=duration or 0.0,
                        outcome="error",
                        error_type="create_failed",
                        message=message,
                    )
                    return
                if phase == "wait":
                    state["pending"] = max(0, state["pending"] - 1)
                emit(
                    "error",
                    error_type=error_type,
                    phase=phase,
                    conn=conn,
                    duration=duration,
                    message=message,
                )

        def closed() -> None:
            with lock:
                emit("close")

        emit(
            "open",
            pending=0,
            system=tracker.system,
            resource=None if tracker.resource == "connection" else tracker.resource,
            max=tracker.max,
            min=tracker.min,
            idle_max=tracker.idle_max,
            library=tracker.library,
        )
        tracker.bind(
            state,
            now=clock,
            created=created,
            validated=validated,
            waiting=waiting,
            borrowed=borrowed,
            returned=returned,
            evicted=evicted,
            failed=failed,
            closed=closed,
        )

    def unbind(self, tracker: api.Tracker) -> None:
        return None


@contextlib.contextmanager
def _capturing(stream: _Stream) -> Iterator[PoolRegistry]:
    registry = PoolRegistry()
    registry.subscribe(stream.add_event)
    previous_registry = set_default_registry(registry)
    recorder = CaptureRecorder(stream.add)
    previous_recorder = api.attach(recorder)
    try:
        yield registry
    finally:
        if previous_recorder is not None:
            api.attach(previous_recorder)
        else:
            api.detach(recorder)
        set_default_registry(previous_registry)
        registry.clear()


# ------------------------------------------------------------------ scenarios
# Each returns what the stream must show: a set of EXPECTATIONS keys to check.


def _borrow(adapter: PoolAdapter) -> set[str]:
    for _ in range(2):
        adapter.give_back(adapter.borrow(5.0))
    return {"kit-no-borrow"}


def _contention(adapter: PoolAdapter) -> set[str]:
    errors: list[BaseException] = []
    start = threading.Barrier(_THREADS)

    def caller() -> None:
        try:
            start.wait()
            for _ in range(_CYCLES):
                handle = adapter.borrow(10.0)
                time.sleep(0.001)  # hold it: makes the others queue (no timing is asserted)
                adapter.give_back(handle)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {"kit-no-borrow"}


def _timeout(adapter: PoolAdapter) -> set[str]:
    held = [adapter.borrow(5.0) for _ in range(MAX_SIZE)]
    timed_out = False
    try:
        extra = adapter.borrow(0.05)
    except Exception:
        timed_out = True
    else:
        adapter.give_back(extra)
    for handle in held:
        adapter.give_back(handle)
    if not timed_out:
        raise RuntimeError(f"a borrow from a pool of {MAX_SIZE} with all held did not time out")
    return {"kit-no-borrow", "kit-no-timeout"}


def _broken(adapter: PoolAdapter) -> set[str]:
    handle = adapter.borrow(5.0)
    adapter.break_resource(handle)
    adapter.give_back(handle)
    for _ in range(2):
        adapter.give_back(adapter.borrow(5.0))
    return {"kit-no-borrow", "kit-broken-not-evicted"}


def _close(adapter: PoolAdapter) -> set[str]:
    adapter.give_back(adapter.borrow(5.0))
    return {"kit-no-borrow", "kit-no-close"}


_SCENARIO_FUNCS: Final[Mapping[str, Callable[[PoolAdapter], set[str]]]] = {
    "borrow": _borrow,
    "contention": _contention,
    "timeout": _timeout,
    "broken": _broken,
    "close": _close,
}


def _expectation_failures(
    scenario: str, events: list[dict[str, Any]], expected: set[str], *, emits_close: bool
) -> list[Failure]:
    last = len(events)
    kinds = [e.get("kind") for e in events]
    out: list[Failure] = []
    if not events:
        return [Failure(scenario, 0, "kit-no-events", EXPECTATIONS["kit-no-events"])]
    if "kit-no-borrow" in expected and "borrow" not in kinds:
        out.append(Failure(scenario, last, "kit-no-borrow", EXPECTATIONS["kit-no-borrow"]))
    if "kit-no-timeout" in expected and not any(
        e.get("kind") == "error" and e.get("error_type") == "timeout" and e.get("phase") == "wait"
        for e in events
    ):
        out.append(Failure(scenario, last, "kit-no-timeout", EXPECTATIONS["kit-no-timeout"]))
    if "kit-broken-not-evicted" in expected and not _broken_evicted_before_close(events):
        out.append(
            Failure(
                scenario, last, "kit-broken-not-evicted", EXPECTATIONS["kit-broken-not-evicted"]
            )
        )
    if emits_close and "close" not in kinds:
        out.append(Failure(scenario, last, "kit-no-close", EXPECTATIONS["kit-no-close"]))
    return out


def _close_index(kinds: list[Any]) -> int:
    # Evictions at close (pool_closed) do not count as the broken resource's eviction.
    return kinds.index("close") if "close" in kinds else len(kinds)


def _broken_evicted_before_close(events: list[dict[str, Any]]) -> bool:
    end = _close_index([e.get("kind") for e in events])
    return any(e.get("kind") == "evict" and e.get("reason") != "pool_closed" for e in events[:end])


def _check_stream(lines: Iterable[str]) -> list[Problem]:
    validator = Validator()
    problems: list[Problem] = []
    for lineno, line in enumerate(lines, start=1):
        problems.extend(validator.check(lineno, line))
    problems.extend(validator.finish())
    return problems


@dataclass
class Report:
    """What :func:`run` found: failures (empty when the pool conforms) and each stream."""

    failures: list[Failure] = field(default_factory=list)
    streams: dict[str, list[str]] = field(default_factory=dict)


def run(adapter: PoolAdapter, scenarios: Sequence[str] = SCENARIOS) -> Report:
    """Run ``scenarios`` against ``adapter``; never raises for a non-conforming pool."""
    report = Report()
    emits_close = bool(getattr(adapter, "emits_close", True))
    for scenario in scenarios:
        try:
            func = _SCENARIO_FUNCS[scenario]
        except KeyError:
            raise ValueError(
                f"unknown scenario {scenario!r}: expected some of {', '.join(SCENARIOS)}"
            ) from None
        stream = _Stream()
        expected: set[str] = set()
        with _capturing(stream) as registry:
            try:
                adapter.open(MAX_SIZE, registry)
                try:
                    expected = func(adapter)
                finally:
                    adapter.close()
            except Exception as exc:
                report.failures.append(
                    Failure(scenario, 0, "kit-adapter", f"{type(exc).__name__}: {exc}")
                )
        lines = list(stream.lines)
        report.streams[scenario] = lines
        events = [json.loads(line) for line in lines]
        report.failures.extend(
            Failure(scenario, p.line, p.rule, p.message) for p in _check_stream(lines)
        )
        if expected:
            report.failures.extend(
                _expectation_failures(scenario, events, expected, emits_close=emits_close)
            )
    return report


def check(adapter: PoolAdapter, scenarios: Sequence[str] = SCENARIOS) -> Report:
    """Like :func:`run`, but raise :class:`ConformanceError` when anything is wrong."""
    report = run(adapter, scenarios)
    if report.failures:
        raise ConformanceError(report.failures, report.streams)
    return report
