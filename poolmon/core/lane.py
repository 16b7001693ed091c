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

**Compiled.** Where ``poolmon._hot`` is built, ledgers get its ``Lane`` instead of
:class:`HotLane` (same attributes, readable from C without attribute lookups) and fold with its
``fold_samples`` (a bisect per sample in C); :mod:`poolmon.core.compiled` chooses. The Python
classes here stay the reference: the compiled ones are tested against them.
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

    __slots__ = ("borrowed", "note_use", "note_wait", "now", "open", "uses", "waits")

    def __init__(self, now: Callable[[], float]) -> None:
        #: True while borrow/return need nothing but the operations above.
        self.open = True
        self.now = now
        #: conn id -> borrow time; the ledger's live ``used`` state (shared, not a copy).
        self.borrowed: dict[int, float] = {}
        self.waits: list[float] = []
        self.uses: list[float] = []
        self.note_wait = self.waits.append
        self.note_use = self.uses.append

    def clear_samples(self) -> None:
        """Drop samples not folded yet (a forked child must not count its parent's)."""
        del self.waits[:]
        del self.uses[:]


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
