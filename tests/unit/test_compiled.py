"""poolmon._hot, the compiled fast path: a lane with the Python lane's interface that buckets
every sample exactly where the Python lane's drain does, wrappers that bind and introspect like
the functions they replace, and a switch that turns it all off."""

from __future__ import annotations

import inspect
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolmon.core import compiled
from poolmon.core.lane import HotLane
from tests.conftest import require

BOUNDS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@pytest.fixture
def hot() -> Any:
    module = compiled.compiled_module()
    require(module is not None, "poolmon._hot (build it: pip install -e .)")
    return module


#: What a shim or the ledger uses of a lane (poolmon.core.lane); both implementations have it.
LANE_INTERFACE = (
    "borrow",
    "borrowed",
    "clear_samples",
    "drain",
    "now",
    "open",
    "release",
    "retired",
    "uses",
    "waits",
)


def test_lane_has_the_python_lanes_interface(hot: Any) -> None:
    clock = iter(range(100)).__next__
    lane, reference = hot.Lane(clock, BOUNDS, BOUNDS), HotLane(clock, BOUNDS, BOUNDS)
    for name in LANE_INTERFACE:
        assert hasattr(lane, name) and hasattr(reference, name), name
    assert type(lane.borrowed) is hot.Borrowed and type(reference.borrowed) is dict
    assert lane.open is True and lane.retired is False and lane.now is clock
    lane.open, lane.retired = False, True
    assert lane.open is False and lane.retired is True
    # Samples go straight into buckets: no list for a writer to watch grow.
    assert lane.borrow(1, 0.0, 0.5) is False and lane.release(1, 1.5) is False
    assert len(lane.waits) == len(lane.uses) == 0
    waits, uses = [0] * (len(BOUNDS) + 1), [0] * (len(BOUNDS) + 1)
    assert lane.drain(waits, uses) == (0.5, 1.5)
    assert waits[BOUNDS.index(0.5)] == 1 and uses[BOUNDS.index(5.0)] == 1
    assert lane.drain(waits, uses) == (0.0, 0.0)  # drained: nothing twice
    lane.borrow(2, 0.0, 0.1)
    lane.release(2, 0.2)
    lane.clear_samples()
    assert lane.drain(waits, uses) == (0.0, 0.0) and sum(waits) == sum(uses) == 1
    with pytest.raises(AttributeError):
        lane.borrowed = {}
    with pytest.raises(TypeError, match="callable"):
        hot.Lane(3)


def test_lane_rejects_bad_bounds_and_counts(hot: Any) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        hot.Lane(float, (1.0, 0.5), ())
    with pytest.raises(ValueError, match="at most 64"):
        hot.Lane(float, tuple(float(i) for i in range(65)), ())
    with pytest.raises(TypeError):
        hot.Lane(float, (1.0, "x"), ())
    lane = hot.Lane(float, BOUNDS, BOUNDS)
    lane.borrow(1, 0.0, 0.5)
    with pytest.raises(ValueError, match="need a list of 10 counts"):
        lane.drain([0, 0], [0] * 10)
    with pytest.raises(TypeError):
        lane.borrow(2, 0.0, "soon")
    assert 2 not in lane.borrowed  # a refused borrow records nothing
    waits = [0] * 10
    assert lane.drain(waits, [0] * 10) == (0.5, 0.0)  # the refused drain lost nothing
    assert sum(waits) == 1


def test_lane_reads_the_system_clock_as_perf_counter_does(hot: Any) -> None:
    lane = hot.Lane(time.perf_counter)
    # On Linux the lane reads CLOCK_MONOTONIC itself; elsewhere it calls perf_counter.
    assert lane.direct_clock is sys.platform.startswith("linux")
    for _ in range(1000):
        before = time.perf_counter()
        reading = lane.read_clock()
        after = time.perf_counter()
        assert type(reading) is float
        assert before <= reading <= after  # the same clock: readings interleave in order


def test_lane_calls_an_injected_clock(hot: Any) -> None:
    readings = iter([7, 2.5])
    lane = hot.Lane(readings.__next__)
    assert lane.direct_clock is False
    first, second = lane.read_clock(), lane.read_clock()
    assert (first, second) == (7.0, 2.5)
    assert type(first) is float  # an int reading becomes a float sample


samples_strategy = st.lists(
    st.floats(min_value=-1.0, max_value=10.0, allow_nan=False), max_size=300
)


@given(samples_strategy, samples_strategy)
def test_compiled_lane_buckets_every_sample_as_the_python_lane_drains_it(
    waits: list[float], uses: list[float]
) -> None:
    module = compiled.compiled_module()
    if module is None:
        return  # the hot fixture reports the missing module (and fails in CI)
    lanes = (module.Lane(float, BOUNDS, BOUNDS), HotLane(float, BOUNDS, BOUNDS))
    results = []
    for lane in lanes:
        # Through the lane protocol: a wait sample per borrow, a use sample per return (the
        # extra zero waits of the returns' borrows are the same on both lanes).
        for x in waits:
            lane.borrow(1, 0.0, x)
        for x in uses:
            lane.borrow(2, 0.0, 0.0)
            lane.release(2, x)
        counts = ([0] * (len(BOUNDS) + 1), [0] * (len(BOUNDS) + 1))
        sums = lane.drain(*counts)
        results.append((counts, sums))
    (compiled_counts, compiled_sums), (python_counts, python_sums) = results
    assert compiled_counts == python_counts
    assert compiled_sums == pytest.approx(python_sums, rel=1e-9, abs=1e-12)


class Pool:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._check: Any = None

    def take(self, timeout: float | None = None) -> str:
        """Take something."""
        self.calls.append(("take", timeout))
        return "taken"


def _slow(original: Any, log: list[str]) -> Any:
    def slow(self: Any, *args: Any, **kwargs: Any) -> Any:
        log.append("slow")
        return original(self, *args, **kwargs)

    return slow


def test_hot_method_binds_and_introspects_like_the_original(hot: Any) -> None:
    original = Pool.take
    log: list[str] = []
    wrapper = hot.HotMethod(
        hot.SKIP_IF_TRUTHY, original, _slow(original, log), absorb=print, attr="_check"
    )
    assert wrapper.__wrapped__ is original
    assert (wrapper.__name__, wrapper.__qualname__, wrapper.__doc__) == (
        "take",
        "Pool.take",
        "Take something.",
    )
    assert inspect.signature(wrapper) == inspect.signature(original)
    wrapper.__poolmon_original__ = original  # what PatchSet marks its wrappers with
    assert wrapper.__poolmon_original__ is original
    assert "poolmon fast wrapper" in repr(wrapper)

    class Wrapped(Pool):
        take = wrapper

    pool = Wrapped()
    assert Wrapped.take is wrapper  # unbound access gives the wrapper itself
    assert pool.take(timeout=2.0) == "taken"  # _check falsy: handed to the Python wrapper
    assert log == ["slow"] and pool.calls == [("take", 2.0)]
    pool._check = object()
    assert pool.take(3.0) is None  # _check truthy: the known no-op result, original skipped
    bound = pool.take
    assert bound() is None
    assert log == ["slow"] and pool.calls == [("take", 2.0)]


def test_hot_method_rejects_bad_arguments(hot: Any) -> None:
    def f(*args: Any) -> None:
        return None

    with pytest.raises(ValueError, match="kind must be in 1\\.\\."):
        hot.HotMethod(0, f, f, absorb=f)
    with pytest.raises(ValueError, match="SKIP_IF_TRUTHY needs attr"):
        hot.HotMethod(hot.SKIP_IF_TRUTHY, f, f, absorb=f)
    with pytest.raises(ValueError, match="BORROW and RELEASE need conn_link"):
        hot.HotMethod(hot.BORROW, f, f, absorb=f)
    with pytest.raises(ValueError, match="need pool_link"):
        hot.HotMethod(hot.RELEASE, f, f, absorb=f, conn_link="x", timed=True)
    with pytest.raises(TypeError, match="must be a str or None"):
        hot.HotMethod(hot.BORROW, f, f, absorb=f, conn_link=3)
    with pytest.raises(TypeError, match="defaults must be a tuple"):
        hot.HotMethod(hot.BORROW, f, f, absorb=f, conn_link="x", defaults=[None])
    with pytest.raises(TypeError, match="must be callable"):
        hot.HotMethod(hot.BORROW, f, 3, absorb=f, conn_link="x")


def test_the_switch_selects_the_python_implementation(
    hot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: Any) -> None:
        return None

    try:
        compiled.set_compiled(enabled=False)
        assert isinstance(compiled.new_lane(float, BOUNDS, BOUNDS), HotLane)
        assert compiled.fast_method("BORROW", slow, slow, absorb=slow) is slow
        compiled.set_compiled(enabled=None)
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "1")
        assert compiled.compiled_module() is None
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "0")
        module = compiled.compiled_module()
        assert module is not None and module is hot
        assert isinstance(compiled.new_lane(float, BOUNDS, BOUNDS), module.Lane)
    finally:
        compiled.set_compiled(enabled=None)


# ------------------------------------------------------------------ Borrowed, the compiled table

# Ids are ints; other keys (a mock connection's "id" in a library's own tests, an int past 64
# bits) must behave as the dict's did too.
ids = st.one_of(
    st.integers(min_value=-3, max_value=40),
    st.sampled_from(["mock", "other", 2**70, -(2**70)]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), ids, st.floats(min_value=0.0, max_value=1e6)),
        st.tuples(st.just("pop"), ids, st.none()),
        st.tuples(st.just("del"), ids, st.none()),
        st.tuples(st.just("get"), ids, st.none()),
        st.tuples(st.just("clear"), st.just(0), st.none()),
    ),
    max_size=400,
)


@given(operations)
def test_borrowed_behaves_as_the_dict_it_replaces(ops: list[tuple[str, int, Any]]) -> None:
    """Every operation the ledger and the shims use, against a dict; ``copy()`` keeps the
    dict's order (borrow order: a re-borrowed id keeps its place), through growth and tombstone
    sweeps."""
    module = compiled.compiled_module()
    if module is None:
        return  # the hot fixture reports the missing module (and fails in CI)
    table, reference = module.Lane(float).borrowed, {}
    for op, key, value in ops:
        if op == "set":
            table[key] = value
            reference[key] = value
        elif op == "pop":
            assert table.pop(key, None) == reference.pop(key, None)
        elif op == "del":
            if key in reference:
                del table[key]
                del reference[key]
            else:
                with pytest.raises(KeyError):
                    del table[key]
        elif op == "get":
            assert table.get(key) == reference.get(key)
            assert (key in table) is (key in reference)
        else:
            table.clear()
            reference.clear()
        assert len(table) == len(reference)
    copy = table.copy()
    assert type(copy) is dict
    assert list(copy.items()) == list(reference.items())
    assert list(table) == list(reference)


def test_borrowed_refuses_what_is_not_a_time(hot: Any) -> None:
    table = hot.Lane(float).borrowed
    with pytest.raises(TypeError, match="borrow times are floats"):
        table[1] = "soon"
    with pytest.raises(TypeError, match="borrow times are floats"):
        table["mock"] = "soon"
    assert "a" not in table and 2**70 not in table and table.get("a", 5) == 5
    with pytest.raises(KeyError):
        table.pop(7)
    table[7] = 3  # an int time from an injected clock is kept as a float
    assert table[7] == 3.0 and type(table[7]) is float
    table["mock"] = 1.5
    assert repr(table) == "Borrowed({7: 3.0, 'mock': 1.5})"
