"""poolmon._hot, the compiled fast path: same lane, same folding, wrappers that bind and
introspect like the functions they replace, and a switch that turns it all off."""

from __future__ import annotations

import inspect
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolmon.core import compiled
from poolmon.core.lane import HotLane, fold_samples
from tests.conftest import require

BOUNDS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


@pytest.fixture
def hot() -> Any:
    module = compiled.compiled_module()
    require(module is not None, "poolmon._hot (build it: pip install -e .)")
    return module


def test_lane_has_the_python_lanes_attributes(hot: Any) -> None:
    clock = iter(range(100)).__next__
    lane, reference = hot.Lane(clock), HotLane(clock)
    for name in HotLane.__slots__:
        assert type(getattr(lane, name)) is type(getattr(reference, name)), name
    assert lane.open is True and lane.now is clock
    lane.open = False
    assert lane.open is False
    lane.note_wait(0.5)
    lane.note_use(1.5)
    assert (lane.waits, lane.uses) == ([0.5], [1.5])
    lane.clear_samples()
    assert (lane.waits, lane.uses) == ([], [])
    with pytest.raises(AttributeError):
        lane.borrowed = {}
    with pytest.raises(TypeError, match="callable"):
        hot.Lane(3)


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


@given(st.lists(st.floats(min_value=-1.0, max_value=10.0, allow_nan=False), max_size=300))
def test_compiled_fold_puts_every_sample_in_the_python_folds_bucket(samples: list[float]) -> None:
    module = compiled.compiled_module()
    if module is None:
        return  # the hot fixture reports the missing module (and fails in CI)
    python_counts = [0] * (len(BOUNDS) + 1)
    compiled_counts = [0] * (len(BOUNDS) + 1)
    python_sum = fold_samples(python_counts, BOUNDS, list(samples))
    compiled_sum = module.fold_samples(compiled_counts, BOUNDS, samples)
    assert compiled_counts == python_counts
    assert compiled_sum == pytest.approx(python_sum, rel=1e-9, abs=1e-12)


def test_compiled_fold_rejects_mismatched_buckets(hot: Any) -> None:
    with pytest.raises(ValueError, match="len\\(counts\\) == len\\(bounds\\) \\+ 1"):
        hot.fold_samples([0, 0], BOUNDS, [1.0])
    with pytest.raises(TypeError):
        hot.fold_samples((0,), BOUNDS, [1.0])


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
    with pytest.raises(TypeError, match="need attr"):
        hot.HotMethod(hot.SKIP_IF_FALSY, f, f, absorb=f)
    with pytest.raises(TypeError, match="must be callable"):
        hot.HotMethod(hot.REDIS_GET, f, 3, absorb=f)


def test_the_switch_selects_the_python_implementation(
    hot: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(*args: Any) -> None:
        return None

    try:
        compiled.set_compiled(False)
        assert isinstance(compiled.new_lane(float), HotLane)
        assert compiled.fast_method("REDIS_GET", slow, slow, absorb=slow) is slow
        assert compiled.fold_function() is fold_samples
        compiled.set_compiled(None)
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "1")
        assert compiled.compiled_module() is None
        monkeypatch.setenv(compiled.PURE_PYTHON_ENV, "0")
        assert compiled.compiled_module() is hot
        assert isinstance(compiled.new_lane(float), hot.Lane)
        assert compiled.fold_function() is hot.fold_samples
    finally:
        compiled.set_compiled(None)
