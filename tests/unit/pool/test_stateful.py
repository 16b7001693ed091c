"""A hypothesis state machine drives a Pool through borrows, returns, clock moves, create and
validation failures and close, checking the invariants after every step."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.errors import PoolClosed, PoolExhausted, PoolTimeout
from poolmon.pool import Pool
from tests.unit.pool._support import Recorder, Res, ScriptedFactory

MAX = 3


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.registry = PoolRegistry()
        self.rec = Recorder(self.registry)
        self.clock = ManualClock()
        self.fac = ScriptedFactory()
        self.pool = Pool(
            self.fac,
            registry=self.registry,
            clock=self.clock,
            maintain=False,
            max_size=MAX,
            min_size=1,
            validate_after=5.0,
            max_lifetime=60.0,
            idle_timeout=20.0,
            backoff_initial=1.0,
            backoff_max=4.0,
            rng=lambda: 0.5,
        )
        self.held: list[Res] = []
        self.closed = False

    @precondition(lambda self: not self.closed)
    @rule()
    def borrow(self) -> None:
        try:
            conn = self.pool.getconn(timeout=0)
        except (PoolTimeout, PoolExhausted):
            # Refused only when full, or creating fails / is backed off after failures.
            backed_off = not self.pool._backoff.ready(self.clock.monotonic())
            assert len(self.held) == MAX or self.fac.fail_create is not None or backed_off
            return
        assert all(conn is not h for h in self.held), "lent twice"
        assert not conn.closed, "lent a destroyed resource"
        self.held.append(conn)

    @precondition(lambda self: bool(self.held))
    @rule(index=st.integers(min_value=0), broken=st.booleans())
    def give_back(self, index: int, *, broken: bool) -> None:
        conn = self.held.pop(index % len(self.held))
        self.pool.putconn(conn, broken=broken)

    @rule(seconds=st.sampled_from([0.5, 3.0, 6.0, 25.0, 70.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(fail=st.booleans())
    def create_failures(self, *, fail: bool) -> None:
        self.fac.fail_create = ConnectionRefusedError("down") if fail else None

    @rule(valid=st.booleans())
    def validation(self, *, valid: bool) -> None:
        self.fac.valid = valid

    @precondition(lambda self: not self.closed)
    @rule()
    def maintain(self) -> None:
        self.pool.run_maintenance()

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.pool.close()
        self.closed = True
        try:
            self.pool.getconn(timeout=0)
        except PoolClosed:
            pass
        else:  # pragma: no cover - the assertion below reports it
            raise AssertionError("borrow after close succeeded")

    @invariant()
    def within_max(self) -> None:
        snap = self.pool.snapshot()
        assert snap.used + snap.idle <= MAX
        assert self.pool.size <= MAX
        if not self.closed:
            assert snap.used == len(self.held)
            assert snap.pending == 0

    def teardown(self) -> None:
        for conn in self.held:
            self.pool.putconn(conn)
        self.pool.close()
        self.rec.assert_valid()
        # Every borrow ends in a return or an evict of that connection.
        open_borrows: set[int] = set()
        for event in self.rec.events:
            if event["kind"] == "borrow":
                open_borrows.add(event["conn"])
            elif event["kind"] in ("return", "evict"):
                open_borrows.discard(event["conn"])
        assert open_borrows == set()
        assert all(r.closed for r in self.fac.made), "a resource was never destroyed"


PoolMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestPool = PoolMachine.TestCase
