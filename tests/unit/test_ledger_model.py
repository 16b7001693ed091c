"""The ledger against a simple reference model, on hypothesis-generated event sequences.

The model is deliberately naive (sets, lists, a linear bucket search) so it can be trusted by
reading it. After every step the ledger's snapshot must equal the model's state exactly: the clock
is a ManualClock moving in steps of 1/1024 s, so every duration and sum is an exact float. At the
end, the JSONL stream the ledger emitted must pass the conformance checker.
"""

from __future__ import annotations

import io

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from poolmon.conformance import validate_stream
from poolmon.core.catalog import BUCKETS, ERROR_TYPES, EVICTION_REASONS
from poolmon.core.clock import ManualClock
from poolmon.core.identity import PoolIdentity
from poolmon.core.ledger import PoolLedger
from poolmon.core.sinks import JsonlSink

STEP = 1 / 1024
MAX = 6
_ticks = st.integers(min_value=0, max_value=4096)
_pick = st.integers(min_value=0, max_value=1000)


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


class _Histogram:
    def __init__(self, key: str) -> None:
        self.bounds = BUCKETS[key]
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        self.counts[_bucket(self.bounds, value)] += 1
        self.sum += value


class LedgerVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(start=1024.0)
        self.ledger = PoolLedger(PoolIdentity("model"), max_size=MAX, clock=self.clock)
        self.stream = io.StringIO()
        self.ledger.subscribe(JsonlSink(self.stream))
        # The model.
        self.created: dict[int, float] = {}
        self.borrowed: dict[int, float] = {}
        self.waiters: list[float] = []
        self.flagged: set[int] = set()
        self.wait = _Histogram("wait_time")
        self.use = _Histogram("use_time")
        self.life = _Histogram("lifetime")
        self.create_ok = _Histogram("create_time")
        self.create_err = _Histogram("create_time")
        self.evictions = dict.fromkeys(EVICTION_REASONS, 0)
        self.errors = dict.fromkeys(ERROR_TYPES, 0)
        self.validations = {"ok": 0, "error": 0}

    # ------------------------------------------------------------------ helpers

    def _now(self) -> float:
        return self.clock.monotonic()

    def _idle(self) -> list[int]:
        return sorted(c for c in self.created if c not in self.borrowed)

    def _choose(self, conns: list[int], pick: int) -> int:
        return conns[pick % len(conns)]

    def _evicted(self, conn: int, reason: str) -> None:
        self.life.add(self._now() - self.created.pop(conn))
        self.borrowed.pop(conn, None)
        self.flagged.discard(conn)
        self.evictions[reason] += 1

    # ------------------------------------------------------------------ rules

    @rule(ticks=_ticks)
    def advance(self, ticks: int) -> None:
        self.clock.advance(ticks * STEP)

    @precondition(lambda self: len(self.created) < MAX)
    @rule(ticks=_ticks)
    def create(self, ticks: int) -> None:
        t0 = self._now()
        self.clock.advance(ticks * STEP)
        conn = self.ledger.create(t0)
        assert conn not in self.created
        self.created[conn] = self._now()
        self.create_ok.add(ticks * STEP)

    @rule(ticks=_ticks)
    def create_failed(self, ticks: int) -> None:
        t0 = self._now()
        self.clock.advance(ticks * STEP)
        self.ledger.create_failed(t0, OSError("connection refused"))
        self.create_err.add(ticks * STEP)
        self.errors["create_failed"] += 1

    @precondition(lambda self: len(self.created) < MAX)
    @rule(ticks=_ticks)
    def adopt(self, ticks: int) -> None:
        conn = self.ledger.adopt(age=ticks * STEP)
        self.created[conn] = self._now() - ticks * STEP

    @rule()
    def wait_for_one(self) -> None:
        self.waiters.append(self._now())
        assert self.ledger.wait() == len(self.waiters)

    @precondition(lambda self: any(c not in self.borrowed for c in self.created))
    @rule(pick=_pick)
    def borrow_idle(self, pick: int) -> None:
        conn = self._choose(self._idle(), pick)
        self.ledger.borrow(conn)
        self.borrowed[conn] = self._now()
        self.wait.add(0.0)

    @precondition(lambda self: self.waiters and any(c not in self.borrowed for c in self.created))
    @rule(pick=_pick)
    def hand_to_waiter(self, pick: int) -> None:
        conn = self._choose(self._idle(), pick)
        t0 = self.waiters.pop(0)
        self.ledger.borrow(conn, t0, queued=True)
        self.borrowed[conn] = self._now()
        self.wait.add(self._now() - t0)

    @precondition(lambda self: self.borrowed)
    @rule(pick=_pick)
    def release(self, pick: int) -> None:
        conn = self._choose(sorted(self.borrowed), pick)
        self.ledger.release(conn)
        self.use.add(self._now() - self.borrowed.pop(conn))
        self.flagged.discard(conn)

    @precondition(lambda self: self.created)
    @rule(pick=_pick, ticks=_ticks)
    def validate_ok(self, pick: int, ticks: int) -> None:
        conn = self._choose(sorted(self.created), pick)
        t0 = self._now()
        self.clock.advance(ticks * STEP)
        self.ledger.validate(conn, t0, ok=True)
        self.validations["ok"] += 1

    @precondition(lambda self: self.created)
    @rule(pick=_pick)
    def validate_failed_then_evict(self, pick: int) -> None:
        conn = self._choose(sorted(self.created), pick)
        self.ledger.validate(conn, self._now(), ok=False)
        self.ledger.evict(conn, "failed_validation")
        self.validations["error"] += 1
        self.errors["validation_failed"] += 1
        self._evicted(conn, "failed_validation")

    @precondition(lambda self: self.created)
    @rule(pick=_pick, reason=st.sampled_from(EVICTION_REASONS))
    def evict(self, pick: int, reason: str) -> None:
        conn = self._choose(sorted(self.created), pick)
        self.ledger.evict(conn, reason)
        self._evicted(conn, reason)

    @precondition(lambda self: self.waiters)
    @rule(cancel=st.booleans())
    def give_up(self, *, cancel: bool) -> None:
        t0 = self.waiters.pop(0)
        if cancel:
            self.ledger.error("cancelled", "wait", "CancelledError", duration=self._now() - t0)
            self.errors["cancelled"] += 1
        else:
            self.ledger.timeout(t0, "PoolTimeout")
            self.errors["timeout"] += 1

    @rule(error_type=st.sampled_from(["exhausted", "reset_failed", "other"]))
    def refuse(self, error_type: str) -> None:
        self.ledger.error(error_type, "borrow", f"{error_type} happened")
        self.errors[error_type] += 1

    @rule(ticks=st.integers(min_value=0, max_value=8192))
    def check_leaks(self, ticks: int) -> None:
        threshold = ticks * STEP
        now = self._now()
        old = sorted(c for c, t in self.borrowed.items() if now - t >= threshold)
        found = self.ledger.check_leaks(threshold)
        assert sorted(leak.conn for leak in found) == old
        for conn in old:
            if conn not in self.flagged:
                self.flagged.add(conn)
                self.errors["leak_suspected"] += 1

    # ------------------------------------------------------------------ checks

    @invariant()
    def live_state_and_aggregates_equal_the_model(self) -> None:
        snap = self.ledger.snapshot()
        assert (snap.idle, snap.used, snap.pending) == (
            len(self.created) - len(self.borrowed),
            len(self.borrowed),
            len(self.waiters),
        )
        conns = self.ledger.connections()
        assert sorted(conns["idle"]) == self._idle()
        assert sorted(conns["used"]) == sorted(self.borrowed)
        oldest = max((self._now() - t for t in self.borrowed.values()), default=0.0)
        assert snap.oldest_use == oldest
        for got, want in (
            (snap.wait_time, self.wait),
            (snap.use_time, self.use),
            (snap.lifetime, self.life),
            (snap.create_time["ok"], self.create_ok),
            (snap.create_time["error"], self.create_err),
        ):
            assert (list(got.counts), got.sum) == (want.counts, want.sum)
        assert dict(snap.evictions) == self.evictions
        assert dict(snap.errors) == self.errors
        assert dict(snap.validations) == self.validations

    def teardown(self) -> None:
        problems = validate_stream(self.stream.getvalue().splitlines())
        assert problems == [], "\n".join(p.format("stream") for p in problems)


LedgerVsModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_ledger_equals_reference_model = LedgerVsModel.TestCase


def test_misuse_is_tolerated_without_corrupting_counts() -> None:
    # Shims see libraries misbehave (double returns, evicting twice): the ledger must neither
    # raise nor count twice nor let pending go below zero.
    clock = ManualClock()
    ledger = PoolLedger(PoolIdentity("misuse"), clock=clock)
    conn = ledger.create(clock.monotonic())
    ledger.release(conn)  # return without borrow: ignored
    ledger.release(999)  # unknown connection: ignored
    ledger.borrow(conn, queued=True)  # queued with nobody pending: pending stays 0
    ledger.error("timeout", "wait")  # same
    ledger.release(conn)
    ledger.evict(conn, "broken")
    ledger.evict(conn, "broken")  # evicting twice counts once
    ledger.evict(conn, "not-a-reason")  # unknown reasons map to "other", but conn is gone
    ledger.error("not-a-type", "borrow")  # unknown error types count as "other"
    snap = ledger.snapshot()
    assert (snap.idle, snap.used, snap.pending) == (0, 0, 0)
    assert (snap.borrows, snap.returns) == (1, 1)
    assert snap.evictions["broken"] == 1 and snap.evictions["other"] == 0
    assert snap.errors["timeout"] == 1 and snap.errors["other"] == 1


def test_leak_is_reported_once_per_borrow() -> None:
    clock = ManualClock()
    ledger = PoolLedger(PoolIdentity("leaks"), clock=clock)
    conn = ledger.create(clock.monotonic())
    for _ in range(2):  # a second borrow of the same connection may leak again
        ledger.borrow(conn)
        clock.advance(60)
        assert [leak.conn for leak in ledger.check_leaks(30)] == [conn]
        assert [leak.conn for leak in ledger.check_leaks(30)] == [conn]  # still leaking
        ledger.release(conn)
    assert ledger.snapshot().errors["leak_suspected"] == 2
