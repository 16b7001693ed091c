"""benchmarks._paired's statistics: the median's confidence interval and the verdict rules (the
benchmarks print these; a wrong rule would pass or fail a bar on noise)."""

from __future__ import annotations

import pytest

from benchmarks._paired import AGAIN, Blocks, _median_ci, interleave, report


def test_median_interval_is_the_binomial_order_statistics() -> None:
    # n = 30: P(Binomial(30, 1/2) <= 9) = 2.1% <= 2.5% < P(<= 10) = 4.9%: the 10th and 21st.
    assert _median_ci([float(i) for i in range(30)]) == (9.0, 14.5, 20.0)
    # Too few values for any 95% interval: the whole range.
    assert _median_ci([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)


def _blocks(wall_ratio: float, cpu_added: float, n: int = 30) -> Blocks:
    """Plain at 100 us with small deterministic scatter; the mode at ``wall_ratio`` of it."""
    plain = [100e-6 * (1 + 0.001 * ((i * 7) % 11 - 5)) for i in range(n)]
    return Blocks(
        wall={"plain": plain, "poolmon": [p * wall_ratio for p in plain], AGAIN: plain},
        cpu={"plain": plain, "poolmon": [p + cpu_added for p in plain], AGAIN: plain},
    )


@pytest.mark.parametrize(
    ("wall_ratio", "cpu_added", "met", "says"),
    [
        (1.005, 0.5e-6, True, "meets"),
        (1.05, 5e-6, False, "MISSES"),
    ],
)
def test_a_resolved_wall_ratio_decides(
    wall_ratio: float,
    cpu_added: float,
    *,
    met: bool,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert report("case", _blocks(wall_ratio, cpu_added), "poolmon", bar=1.02) is met
    assert f"bar <= 1.02: {says}" in capsys.readouterr().out


def test_noise_across_the_bar_is_reported_unresolved(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _blocks(1.0, 0.0)
    # Paired ratios spread from 0.95 to 1.09 and CPU deltas likewise: nothing can be told.
    blocks.wall["poolmon"] = [p * (0.95 + 0.005 * i) for i, p in enumerate(blocks.wall["plain"])]
    blocks.cpu["poolmon"] = [p + (i - 10) * 0.3e-6 for i, p in enumerate(blocks.cpu["plain"])]
    assert report("case", blocks, "poolmon", bar=1.02) is False
    assert "UNRESOLVED" in capsys.readouterr().out


def test_interleave_runs_each_mode_in_a_process_of_its_own() -> None:
    import os

    parent = os.getpid()

    def setup(mode: str) -> tuple[object, object]:
        assert os.getpid() != parent  # a forked child
        return (lambda n: None), (lambda: None)

    blocks = interleave(("plain", "poolmon", AGAIN), setup, per_block=10, blocks=3, warm=1)  # type: ignore[arg-type]
    assert {mode: len(times) for mode, times in blocks.wall.items()} == {
        "plain": 3,
        "poolmon": 3,
        AGAIN: 3,
    }
