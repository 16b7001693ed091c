"""redis-py shim cost: plain vs poolmon vs redis-py's own built-in OTel pool metrics, one run.

Two operations against the real Redis on loopback (``POOLMON_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/0``):

* raw cycle: ``pool.get_connection()`` + ``pool.release(conn)`` on a connected pool (redis-py
  still runs ``connect()`` and a ``can_read()`` poll on every borrow);
* end to end: ``client.get(key)``.

Three modes:

* plain: no poolmon, redis-py observability not initialised;
* poolmon: ``poolmon.shims.redis.instrument()`` (no subscriber: the production configuration);
* built-in: redis-py's ``redis.observability`` initialised with its default metric groups
  (connection metrics included) on an SDK ``MeterProvider`` with an in-memory reader.

The raw cycle runs the modes round by round (many short rounds, a fresh pool per mode and round,
thread CPU time), so drift on this shared machine hits all modes alike; the best round of each
is kept and the median of the paired ratios is the headline. The ``GET`` runs in interleaved
blocks, one forked process per mode and block, with an A/A check and confidence intervals
(``benchmarks._paired``).

Bars (DESIGN.md section 8): poolmon/plain <= 1.10 raw, <= 1.02 end to end, and poolmon's extra
cost per raw cycle below the built-in metrics' extra cost.

Each round prints one progress line on stderr (the time each mode took), so a run that slows
down or stops shows where at once; a round still running after ``--round-limit`` seconds dumps
every thread's stack and ends the run (a hang in a shim or in redis-py then explains itself
instead of running on silently). ``--budget`` caps the raw rounds: they stop once the next one
would not fit (at least ``_MIN_ROUNDS`` always run), and the report says how many ran. Exit
status 1 when a bar is missed.

Usage: python -m benchmarks shim_redis [--n N] [--rounds R] [--budget S] [--round-limit S]
[--blocks B]
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

from benchmarks._paired import AGAIN, interleave, report, require_observed
from benchmarks._timing import print_table

__all__ = ["main"]

REDIS_URL = os.environ.get("POOLMON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Rounds that always run, whatever the budget: the paired median needs a few.
_MIN_ROUNDS = 5


def _raw(pool: object) -> Callable[[int], None]:
    get = pool.get_connection  # type: ignore[attr-defined]
    release = pool.release  # type: ignore[attr-defined]

    def run(n: int) -> None:
        for _ in range(n):
            conn = get()
            release(conn)

    return run


def _e2e(client: object, key: str) -> Callable[[int], None]:
    get = client.get  # type: ignore[attr-defined]

    def run(n: int) -> None:
        for _ in range(n):
            get(key)

    return run


def _best(fn: Callable[[int], None], n: int, clock: Callable[[], float]) -> float:
    t = clock()
    fn(n)
    return (clock() - t) / n


def _paired(case: list[float], base: list[float]) -> float:
    return statistics.median(c / b for c, b in zip(case, base, strict=True))


class _Modes:
    """Switches between plain, poolmon and built-in; only one is active at a time."""

    def __init__(self) -> None:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from poolmon.core.registry import PoolRegistry

        self.reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.reader]))
        self.registry = PoolRegistry()

    def plain(self) -> None:
        from redis.observability import recorder
        from redis.observability.providers import reset_observability_instance

        import poolmon.shims.redis as shim

        shim.uninstrument()
        reset_observability_instance()
        recorder.reset_collector()

    def poolmon(self) -> None:
        import poolmon.shims.redis as shim

        self.plain()
        shim.instrument(registry=self.registry)

    def builtin(self) -> None:
        from redis.observability import OTelConfig, get_observability_instance, recorder

        self.plain()
        get_observability_instance().init(OTelConfig())
        recorder.reset_collector()
        assert recorder.is_enabled(), "redis-py built-in metrics did not switch on"


def _positive(kind: type[int] | type[float], name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name}={text} is invalid: expected a number > 0")
        return value

    return parse


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks shim_redis")
    parser.add_argument(
        "--n", type=_positive(int, "--n"), default=2000, help="cycles per timing run"
    )
    parser.add_argument(
        "--rounds", type=_positive(int, "--rounds"), default=30, help="interleaved rounds per mode"
    )
    parser.add_argument(
        "--budget",
        type=_positive(float, "--budget"),
        default=90.0,
        metavar="S",
        help="stop starting rounds once the next would end after S seconds (90)",
    )
    parser.add_argument(
        "--round-limit",
        type=_positive(float, "--round-limit"),
        default=120.0,
        metavar="S",
        help="a round still running after S seconds dumps all stacks and ends the run (120)",
    )
    parser.add_argument(
        "--blocks",
        type=_positive(int, "--blocks"),
        default=30,
        help="interleaved end-to-end blocks of 1000 GETs, one process per mode (30)",
    )
    args = parser.parse_args(argv)
    n = int(args.n)

    import redis

    modes = _Modes()
    key = f"poolmon-bench:{uuid.uuid4().hex}"
    setup = redis.Redis.from_url(REDIS_URL)
    setup.set(key, b"x" * 64)

    best: dict[tuple[str, str], float] = {}
    per_round: dict[tuple[str, str], list[float]] = {}
    order = ("plain", "poolmon", "built-in")
    switch = {"plain": modes.plain, "poolmon": modes.poolmon, "built-in": modes.builtin}
    # The raw cycle never waits for the server (can_read is a non-blocking poll), so it is timed
    # in this thread's CPU time: other tenants of this shared machine do not inflate it. The end
    # to end GET waits for Redis, so it is timed on the wall clock.
    ops = (("raw get_connection/release", _raw, n, time.thread_time),)
    started = time.perf_counter()
    rounds_run = 0
    longest_round = 0.0  # the next round is assumed as long as the longest so far
    try:
        for round_index in range(int(args.rounds)):
            elapsed = time.perf_counter() - started
            if rounds_run >= _MIN_ROUNDS and elapsed + longest_round > args.budget:
                break
            faulthandler.dump_traceback_later(args.round_limit, exit=True)
            took: dict[str, float] = {}
            for mode in order:
                t_mode = time.perf_counter()
                switch[mode]()
                # A fresh pool per mode and round: each mode sees a pool it attached to itself.
                pool = redis.ConnectionPool.from_url(REDIS_URL)
                client = redis.Redis(connection_pool=pool)
                client.ping()
                for op, make, count, clock in ops:
                    fn = make(pool)
                    fn(min(count, 500))  # warm up
                    t = _best(fn, count, clock)
                    best[(op, mode)] = min(best.get((op, mode), float("inf")), t)
                    per_round.setdefault((op, mode), []).append(t)
                pool.disconnect()
                took[mode] = time.perf_counter() - t_mode
            faulthandler.cancel_dump_traceback_later()
            rounds_run += 1
            longest_round = max(longest_round, sum(took.values()))
            print(
                f"shim_redis: round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{mode} {took[mode]:.2f}s" for mode in order)
                + f" (elapsed {time.perf_counter() - started:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
        faulthandler.cancel_dump_traceback_later()

        faulthandler.cancel_dump_traceback_later()

        # End to end: the server's latency drifts; many short interleaved blocks, each mode in
        # a forked process of its own (benchmarks._paired), built-in metrics for comparison.
        def block(mode: str) -> tuple[Callable[[int], None], Callable[[], None]]:
            switch["plain" if mode == AGAIN else mode]()
            pool = redis.ConnectionPool.from_url(REDIS_URL)
            client = redis.Redis(connection_pool=pool)

            def close() -> None:
                if mode != "built-in":
                    require_observed(modes.registry, mode)
                pool.disconnect()

            return _e2e(client, key), close

        gets = interleave(
            ("plain", "poolmon", "built-in", AGAIN), block, per_block=1000, blocks=int(args.blocks)
        )
    finally:
        faulthandler.cancel_dump_traceback_later()
        modes.plain()
        setup.delete(key)
        setup.close()

    print(
        f"\nrounds: {rounds_run} of {args.rounds} in {time.perf_counter() - started:.1f} s "
        f"(budget {args.budget:g} s), {n} raw cycles per timing run"
    )
    status = 0
    op, bar = "raw get_connection/release", 1.10
    rows = [(f"{op} [{mode}]", best[(op, mode)]) for mode in order]
    print_table(f"redis-py {op}", rows, baseline=f"{op} [plain]")
    # Headline: the median over rounds of the paired ratio (modes of one round ran back to
    # back, under the same load); the ratio of the best rounds is printed alongside.
    ours = _paired(per_round[(op, "poolmon")], per_round[(op, "plain")])
    theirs = _paired(per_round[(op, "built-in")], per_round[(op, "plain")])
    extra_ours = (best[(op, "poolmon")] - best[(op, "plain")]) * 1e6
    extra_theirs = (best[(op, "built-in")] - best[(op, "plain")]) * 1e6
    ok = ours <= bar and ours < theirs
    print(
        f"  median paired ratio: poolmon/plain {ours:.3f} (bar <= {bar:.2f}: "
        f"{'ok' if ours <= bar else 'MISSED'}), built-in/plain {theirs:.3f}; extra per op (best "
        f"rounds): poolmon {extra_ours:+.3f} us, built-in {extra_theirs:+.3f} us "
        f"({'poolmon cheaper' if ours < theirs else 'built-in cheaper'})"
    )
    status |= 0 if ok else 1
    status |= 0 if report("redis-py end to end GET", gets, "poolmon", bar=1.02) else 1
    builtin = statistics.median(
        b / p for b, p in zip(gets.wall["built-in"], gets.wall["plain"], strict=True)
    )
    print(f"  built-in metrics, for comparison: wall ratio {builtin:.4f}")
    return status
