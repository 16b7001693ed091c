"""A deterministic pool workload on a ManualClock, with the truth computed independently.

Exporter tests compare what reaches Prometheus / an OTLP receiver with these expected values, so
the expectations never come from the code under test.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from poolmon.core import ManualClock, PoolLedger, PoolRegistry
from poolmon.core.catalog import BUCKETS
from poolmon.core.identity import identity_from_url

PG_URL = "postgresql://app:s3cret-pw-42@127.0.0.1:5432/shop"
HTTP2_URL = "https://h2.example.com:8443"
HTTP_URL = "https://svc-user:tok-9f8e7d@api.example.com/v1"
SECRETS = ("s3cret-pw-42", "tok-9f8e7d", "svc-user")

WAITS = [0.0] * 50 + [0.003] * 30 + [0.04] * 15 + [0.2] * 5
USES = [0.001] * 60 + [0.02] * 30 + [0.7] * 8  # 98 returned; 2 stay borrowed
CREATES_OK = [0.002, 0.002, 0.002, 0.004]
CREATES_FAILED = [0.6]


def bucket_counts(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    """Per-bucket counts with Prometheus ``le`` semantics (value == bound goes in that bucket)."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect_left(bounds, v)] += 1
    return counts


@dataclass
class Truth:
    pool: str
    waits: list[float] = field(default_factory=lambda: list(WAITS))
    uses: list[float] = field(default_factory=lambda: list(USES))
    creates_ok: list[float] = field(default_factory=lambda: list(CREATES_OK))
    creates_failed: list[float] = field(default_factory=lambda: list(CREATES_FAILED))
    lifetimes: list[float] = field(default_factory=lambda: [45.0])
    timeouts: int = 2
    pending: int = 1
    used: int = 2
    idle: int = 1
    max: int = 5
    oldest_use: float = 0.0

    def wait_buckets(self) -> list[int]:
        return bucket_counts(self.waits, BUCKETS["wait_time"])

    def use_buckets(self) -> list[int]:
        return bucket_counts(self.uses, BUCKETS["use_time"])

    def create_buckets(self, outcome: str) -> list[int]:
        values = self.creates_ok if outcome == "ok" else self.creates_failed
        return bucket_counts(values, BUCKETS["create_time"])

    def lifetime_buckets(self) -> list[int]:
        return bucket_counts(self.lifetimes, BUCKETS["lifetime"])


def run_workload(registry: PoolRegistry, clock: ManualClock) -> tuple[PoolLedger, Truth]:
    """Drive one PostgreSQL-like pool through creates, waits, borrows, timeouts and evictions."""
    ledger = registry.register(
        identity_from_url(PG_URL, library="psycopg_pool", library_version="3.3.0"),
        max_size=5,
        min_size=1,
        idle_max=3,
        clock=clock,
    )
    truth = Truth(pool=ledger.name)
    conns = []
    for d in CREATES_OK:
        t0 = clock.monotonic()
        clock.advance(d)
        conns.append(ledger.create(t0))
    born = clock.monotonic()
    for d in CREATES_FAILED:
        t0 = clock.monotonic()
        clock.advance(d)
        ledger.create_failed(t0, RuntimeError(f"connect to {PG_URL} failed"))
    # The 4th connection lives 45 s and is closed for idling.
    clock.advance(45.0 - (clock.monotonic() - born))
    ledger.evict(conns.pop(), "idle_timeout")
    c1, c2, c3 = conns
    for i, (wait, use) in enumerate(zip(WAITS[: len(USES)], USES, strict=True)):
        conn = (c1, c2)[i % 2]
        t0 = clock.monotonic()
        clock.advance(wait)
        ledger.borrow(conn, t0, queued=wait > 0)
        clock.advance(use)
        ledger.release(conn)
    for _ in range(truth.timeouts):
        t0 = clock.monotonic()
        ledger.wait()
        clock.advance(0.5)
        ledger.timeout(t0, TimeoutError("no connection in 0.5s"))
    # Two borrows still outstanding (the last two waits), one caller still queued.
    for conn, wait in zip((c1, c2), WAITS[len(USES) :], strict=True):
        t0 = clock.monotonic()
        clock.advance(wait)
        ledger.borrow(conn, t0)
    ledger.wait()
    clock.advance(1.5)
    truth.oldest_use = 1.5 + WAITS[-1]
    ledger.validate(c3, clock.monotonic(), ok=True)
    return ledger, truth


def add_http_pool(registry: PoolRegistry, clock: ManualClock) -> PoolLedger:
    """A second pool of another system (HTTP) so labels and semconv mapping are exercised."""
    ledger = registry.register(identity_from_url(HTTP_URL), max_size=10, clock=clock)
    t0 = clock.monotonic()
    clock.advance(0.01)
    conn = ledger.create(t0)
    ledger.borrow(conn, clock.monotonic())
    clock.advance(0.005)
    ledger.release(conn)
    return ledger


def add_http2_pool(registry: PoolRegistry, clock: ManualClock) -> PoolLedger:
    """An HTTP/2 pool (spec 1.1): one multiplexed connection with 3 of its 100 streams in use."""
    ledger = registry.register(identity_from_url(HTTP2_URL), max_size=1, clock=clock)
    ledger.protocol_version = "2"
    t0 = clock.monotonic()
    clock.advance(0.01)
    conn = ledger.create(t0, max_streams=100)
    starts = [ledger.borrow_stream(conn) for _ in range(4)]
    clock.advance(0.005)
    ledger.release_stream(conn, starts[0])
    return ledger
