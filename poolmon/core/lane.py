"""The ledger's lock-free hot lane: borrow and return recorded without taking the ledger's lock.

A shimmed library pool's whole borrow+return cycle costs ~2.4 us (psycopg_pool) to ~8 us
(redis-py); the standard's bars leave poolmon 0.6-0.8 us of it. A lock pair per event, a bisect
per sample and a Python method call per event already spend that. So when nothing but counting
is asked of a ledger (no subscriber, no stack sampling, no leak bookkeeping: :attr:`HotLane.open`),
borrow and return are reduced to single operations on builtin containers:

* borrow: ``borrowed[conn] = now`` and ``waits.append(now - t0)``;
* return: ``start = borrowed.pop(conn, None)`` and ``uses.append(now - start)``.

**Why that is exact without a lock.** Each of those is one C-level operation on a ``dict`` or
``list``: atomic under the GIL (no Python code runs inside it: keys are ints, values floats) and
guarded by the container's own lock on free-threaded builds. So no update is lost, whatever the
threads do. What is *not* atomic — read-modify-write of a bucket count — happens only in
:func:`fold_samples`, under the ledger's lock, on samples already taken out of the lists.

**Folding.** The ledger moves samples into its fixed-bucket histograms at every snapshot, and a
writer that sees a list longer than :data:`FOLD_AT` asks it to fold early, so memory stays bounded
by ``FOLD_AT`` plus the connections in flight, never by the number of events. Taking samples out
is ``items = lst[:n]; del lst[:n]`` under the lock: appends that race with it land after index
``n`` and wait for the next fold. Sorting a batch and bisecting the bucket bounds into it costs
~30 ns a sample here, against ~110 ns for a bisect per sample.

**Readers** (snapshots, leak checks) copy ``borrowed`` with ``dict.copy()`` (one atomic call)
before iterating, because a writer may change its size at any moment.

**Switching.** ``open`` goes False as soon as a subscriber attaches or leak/stack work is due;
writers test it once per event and take the ledger's locked path from their next event on. An
event already in flight at that moment is counted but not delivered to the new subscriber: the
standard's rules for streams that begin late cover exactly that case.

**Draining.** The ledger empties a lane with :meth:`HotLane.drain`, under its lock, at every
snapshot and whenever a writer asks: the samples go into the ledger's bucket counts and sums.

**Compiled.** Where ``poolmon._hot`` is built, ledgers get its ``Lane`` instead of
:class:`HotLane` (same interface, readable from C without attribute lookups). It does not keep
sample lists at all: ``note_wait``/``note_use`` and the compiled wrappers count each sample
straight into fixed buckets of C doubles (no float object per sample, memory that never grows),
so its ``waits``/``uses`` are always empty and no writer ever asks it for a fold;
:mod:`poolmon.core.compiled` chooses. The Python class here stays the reference: the compiled one
is tested against it.

**Retiring.** A lane whose tracker a shim dropped (``uninstrument()``) is marked ``retired``: a
link or tag still naming it is stale, and the compiled hooks hand such calls to the Python
wrappers, which find the pool's current tracker.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["FOLD_AT", "HotLane", "fold_samples", "take_samples"]

#: A writer asks for a fold when a sample list grows past this length (bounded memory).
FOLD_AT: Final = 512


class HotLane:
    """What a hot-path writer needs, each one slot read away. Owned by one :class:`PoolLedger`.

    ``note_wait``/``note_use`` are the lists' bound ``append`` methods, stored once so that a writer
    does a slot read and a call, not an attribute lookup plus a method binding.
    """

    __slots__ = (
        "borrowed",
        "note_use",
        "note_wait",
        "now",
        "open",
        "retired",
        "use_bounds",
        "uses",
        "wait_bounds",
        "waits",
    )

    def __init__(
        self,
        now: Callable[[], float],
        wait_bounds: Sequence[float] = (),
        use_bounds: Sequence[float] = (),
    ) -> None:
        #: True while borrow/return need nothing but the operations above.
        self.open = True
        #: True once the tracker owning this lane was dropped (see the module docstring).
        self.retired = False
        self.now = now
        self.wait_bounds = tuple(wait_bounds)
        self.use_bounds = tuple(use_bounds)
        #: conn id -> borrow time; the ledger's live ``used`` state (shared, not a copy).
        self.borrowed: dict[int, float] = {}
        self.waits: list[float] = []
        self.uses: list[float] = []
        self.note_wait = self.waits.append
        self.note_use = self.uses.append

    def clear_samples(self) -> None:
        """Drop samples not drained yet (a forked child must not count its parent's)."""
        del self.waits[:]
        del self.uses[:]

    def drain(self, wait_counts: list[int], use_counts: list[int]) -> tuple[float, float]:
        """Add the samples present now into the bucket counts (``len(bounds) + 1`` each) and
        return ``(wait_sum, use_sum)`` of the positive ones. Caller holds the ledger's lock."""
        wait_sum = fold_samples(wait_counts, self.wait_bounds, take_samples(self.waits))
        use_sum = fold_samples(use_counts, self.use_bounds, take_samples(self.uses))
        return wait_sum, use_sum


def take_samples(samples: list[float]) -> list[float]:
    """Remove and return the samples present now. Caller holds the ledger's lock."""
    n = len(samples)
    taken = samples[:n]
    # Appends racing with us land after index n: deleting the first n keeps them for next time.
    del samples[:n]
    return taken


def fold_samples(counts: list[int], bounds: Sequence[float], samples: list[float]) -> float:
    """Add ``samples`` to bucket ``counts`` (``le`` semantics, as ``bisect_left(bounds, x)``) and
    return the sum of the positive ones. Sorts ``samples`` in place. O(n log n + buckets log n).
    """
    if not samples:
        return 0.0
    samples.sort()
    n = len(samples)
    low = 0
    for i, bound in enumerate(bounds):
        # Samples <= bound (and above the previous bound) belong to bucket i.
        high = bisect_right(samples, bound, low)
        counts[i] += high - low
        low = high
        if low == n:
            break
    counts[len(bounds)] += n - low
    # Negative or zero durations (a clock that did not move) count in the first bucket only.
    first_positive = bisect_right(samples, 0.0)
    return sum(samples[first_positive:]) if first_positive < n else 0.0
