"""``poolmon demo --no-tui``: every phase shows up in its real /metrics; it ends by itself, or on
SIGINT or SIGTERM in any phase, cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Literal

import pytest

from poolmon.top.samples import PoolSample
from poolmon.top.sources import MetricsUrlSource
from tests.integration.top.conftest import demo, read_until, wait_for

pytestmark = pytest.mark.integration


def _pools(source: MetricsUrlSource) -> Sequence[PoolSample]:
    (result,) = source.fetch()
    return result.pools if result.ok else ()


def test_phases_are_visible_in_metrics() -> None:
    with demo(["--phase-seconds", "0.8", "--duration", "60"]) as (proc, url):
        source = MetricsUrlSource(url)

        def seen() -> dict[str, bool]:
            pools = _pools(source)
            sqlite = [p for p in pools if p.system == "sqlite"]
            http = [p for p in pools if p.system == "http"]
            return {
                "two sqlite pools and one http pool": len(sqlite) == 2 and len(http) == 1,
                "burst: timeouts": any(p.timeouts > 0 for p in sqlite),
                "burst: waits": any(
                    p.wait_cumulative and p.wait_cumulative[0] < p.wait_cumulative[-1]
                    for p in sqlite
                ),
                "outage: create errors": any(p.create_errors > 0 for p in sqlite),
                "outage: http create errors": any(p.create_errors > 0 for p in http),
                "outage: evictions": any(
                    p.evictions.get("broken", 0) + p.evictions.get("failed_validation", 0) > 0
                    for p in sqlite
                ),
                "leak: suspected": any(p.errors.get("leak_suspected", 0) > 0 for p in sqlite),
            }

        def all_seen() -> dict[str, bool]:
            state = seen()
            return state if all(state.values()) else {}

        try:
            wait_for(all_seen, timeout=45, what="every phase in the metrics")
        except AssertionError:
            missing = [k for k, v in seen().items() if not v]
            raise AssertionError(f"never seen: {missing}") from None
        assert proc.poll() is None


def _exits_cleanly(proc: subprocess.Popen[str], url: str) -> None:
    """The demo ends with 0 after its clean stop, and its endpoint went away with it. The 30 s
    bound only turns a hang into a failure (the stop itself takes well under a second)."""
    assert proc.wait(timeout=30) == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "poolmon demo: stopped" in out
    (result,) = MetricsUrlSource(url, timeout=2).fetch()
    assert not result.ok


def test_duration_ends_it() -> None:
    with demo(["--duration", "2"]) as (proc, url):
        assert wait_for(lambda: _pools(MetricsUrlSource(url)), what="pools")
        _exits_cleanly(proc, url)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_sigint_exits_cleanly(inherited: Literal["default", "ignored"]) -> None:
    """Also when the demo inherits SIGINT ignored, as a non-interactive shell's background job
    does: ``kill -INT`` still ends it (it used to do nothing; a CI run then waited 30 s).

    The signal comes as soon as the pools are visible, i.e. while the workload may still be
    starting: it must not interrupt the start halfway."""
    with demo(sigint=inherited) as (proc, url):
        assert wait_for(lambda: _pools(MetricsUrlSource(url)), what="pools")
        proc.send_signal(signal.SIGINT)
        _exits_cleanly(proc, url)


@pytest.mark.parametrize(
    ("phase", "signum"),
    [
        ("burst", signal.SIGINT),
        ("outage", signal.SIGTERM),
        ("leak", signal.SIGINT),
        ("leak", signal.SIGTERM),
    ],
)
def test_stop_signal_in_each_phase(phase: str, signum: signal.Signals) -> None:
    """Workers waiting in a pool, backends down, a connection held by the leaker: a stop signal
    ends the demo cleanly whatever the workload is doing."""
    with demo(["--phase-seconds", "0.5"]) as (proc, url):
        read_until(proc, f"phase {phase}:")
        proc.send_signal(signum)
        _exits_cleanly(proc, url)


def test_help_works_without_extras_at_import() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from poolmon.cli import build_parser; build_parser().parse_args(['demo', '--help'])",
        ],
        capture_output=True,
        text=True,
    )
    assert "--no-tui" in out.stdout and "--duration" in out.stdout
