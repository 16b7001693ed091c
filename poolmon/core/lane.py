"""The lane protocol: borrow and return recorded without taking the ledger's lock.

This module is the one place the protocol is defined. The ledger (:meth:`PoolLedger.borrow`,
:meth:`PoolLedger.release`) and every shim record through the same two calls on a lane,
``lane.borrow(cid, now, waited)`` and ``lane.release(cid, now)``; the compiled lane
(``poolmon._hot.Lane``) has the same two methods and its hooks run the same two operations in C.
Shims never write a lane's containers themselves: their pure-Python paths call the ledger, whose
methods take the lane while it is open.

Why: a shimmed library pool's whole borrow+return cycle costs ~2.4 us (psycopg_pool) to ~8 us
(redis-py); a lock pair per event, a bisect per sample and a few Python calls already spend what
the bars leave poolmon. So while nothing but counting is asked of a ledger (no subscriber, no
stack sampling, no leak bookkeeping: :attr:`HotLane.open`), borrow and return are reduced to
single operations on builtin containers.

Invariants (cited in the code as L1..L5):

* **L1 (atomic writes).** A borrow is ``borrowed[cid] = now`` and ``waits.append(waited)``; a
  return is ``start = borrowed.pop(cid, None)`` and ``uses.append(now - start)``. Each is one
  C-level operation on a ``dict`` or ``list`` with int keys and float values: atomic under the GIL
  (no Python code runs inside it) and guarded by the container's own lock on free-threaded builds.
  No update is lost, whatever the threads do. What is *not* atomic, the read-modify-write of a
  bucket count, happens only in :func:`fold_samples`, under the ledger's lock.
* **L2 (fold rule).** A writer that makes a sample list longer than :data:`FOLD_AT` gets ``True``
  back from ``borrow``/``release`` and asks the ledger to fold, so memory stays bounded by
  ``FOLD_AT`` plus the connections in flight, never by the number of events. The ledger also
  folds at every snapshot. Taking samples out is ``items = lst[:n]; del lst[:n]`` under the lock:
  appends that race with it land after index ``n`` and wait for the next fold. The compiled lane
  counts into fixed buckets and never asks.
* **L3 (only live ids).** A lane records only ids the ledger knows alive: the ledger checks
  ``_alive`` before taking the lane; a shim's link carries an id from ``create``/``adopt`` and is
  replaced or dropped when that id is evicted, so an id read from a live link is alive.
* **L4 (switching).** ``open`` goes False as soon as a subscriber attaches or leak/stack work is
  due; writers test it once per event and take the ledger's locked path from their next event on.
  An event already in flight at that moment is counted but not delivered to the new subscriber:
  the standard's rules for streams that begin late cover exactly that case.
* **L5 (readers copy).** Snapshots and leak checks copy ``borrowed`` with ``copy()`` (one atomic
  call) before iterating, because a writer may change its size at any moment.

**Retiring.** A lane whose tracker a shim dropped (``uninstrument()``) is marked ``retired``: a
link still naming it is stale, and the compiled hooks hand such calls to the Python wrappers,
which find the pool's current tracker.

**Links.** :class:`Link` is the named record hooks read of a pool or a connection in one
attribute lookup (lane, cid, key, items, table); ``poolmon._hot.Link`` has the same fields.
Links are never changed in place: a new one replaces the old with one ``setattr``.

**Lend tables.** Where a pool lends and takes back in its own Python code and keeps a dict of
what it has lent, a :class:`LendTable` in that dict's place records the borrow at
``table[key] = conn`` and the return at ``del table[key]``: no wrapper around the pool's methods.
The dict operation runs first and whole (L1 for the pool's own state); the bookkeeping after it
goes through the callbacks, never raising into the pool. ``poolmon._hot.LendTable`` is the
compiled twin, which records the common case itself on the lane.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

__all__ = [
    "FOLD_AT",
    "HotLane",
    "LaneProtocol",
    "LendTable",
    "Link",
    "fold_samples",
    "take_samples",
]

#: A writer asks for a fold when a sample list grows past this length (bounded memory).
FOLD_AT: Final = 512


class LaneProtocol(Protocol):
    """What the ledger and the shims use of a lane: :class:`HotLane` and ``poolmon._hot.Lane``."""

    open: bool
    retired: bool

    @property
    def now(self) -> Callable[[], float]: ...

    @property
    def borrowed(self) -> Any: ...

    def borrow(self, cid: int, now: float, waited: float, /) -> bool: ...

    def release(self, cid: int, now: float, /) -> bool: ...

    def clear_samples(self) -> None: ...

    def drain(self, wait_counts: list[int], use_counts: list[int], /) -> tuple[float, float]: ...


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

    def borrow(self, cid: int, now: float, waited: float) -> bool:
        """Record a borrow of ``cid`` at ``now`` after ``waited`` seconds (L1). True when the
        caller must ask the ledger to fold (L2)."""
        self.borrowed[cid] = now
        self.note_wait(waited)
        return len(self.waits) > FOLD_AT

    def release(self, cid: int, now: float) -> bool:
        """Record the return of ``cid`` at ``now``, if it is borrowed (L1). True when the caller
        must ask the ledger to fold (L2)."""
        start = self.borrowed.pop(cid, None)
        if start is None:
            return False
        self.note_use(now - start)
        return len(self.uses) > FOLD_AT

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


class Link:
    """What a hook reads of a pool or a connection, in one attribute lookup (see the module
    docstring). ``poolmon._hot.Link`` is the compiled twin with the same fields.

    * ``lane``: the ledger's lane the hooks record into;
    * ``cid``: a connection link's ledger id, None on a pool link;
    * ``key``: who made it (a tracker, a ledger), or the object a table entry is for;
    * ``items``: a pool link's idle container, or None;
    * ``table``: a pool link's ``id(obj) -> ledger id`` table for objects that take no
      attributes (read by the compiled lend table; None on the Python side).
    """

    __slots__ = ("cid", "items", "key", "lane", "table")

    def __init__(
        self,
        lane: object,
        cid: int | None = None,
        key: object = None,
        items: object = None,
        table: object = None,
    ) -> None:
        self.lane = lane
        self.cid = cid
        self.key = key
        self.items = items
        self.table = table

    def __repr__(self) -> str:
        return f"Link(cid={self.cid!r})"


class LendTable(dict[Any, Any]):
    """A dict of lent connections whose item writes are borrows and returns (see the module
    docstring): ``lent(conn)`` after ``table[key] = conn``, ``returned(conn)`` after
    ``del table[key]``; a failure in either goes to ``absorb(exc)``. ``update``, ``pop`` and
    ``clear`` record nothing (the shim fills and empties a table with them).
    ``poolmon._hot.LendTable`` has the same interface and records the common case in C.
    """

    __slots__ = ("absorb", "lent", "link", "returned")

    def __init__(
        self,
        link: object,
        lent: Callable[[Any], object],
        returned: Callable[[Any], object],
        absorb: Callable[[BaseException], object],
    ) -> None:
        super().__init__()
        self.link = link
        self.lent = lent
        self.returned = returned
        self.absorb = absorb

    def __setitem__(self, key: Any, conn: Any) -> None:
        dict.__setitem__(self, key, conn)
        try:
            self.lent(conn)
        except Exception as exc:
            self.absorb(exc)

    def __delitem__(self, key: Any) -> None:
        conn = dict.__getitem__(self, key)
        dict.__delitem__(self, key)
        try:
            self.returned(conn)
        except Exception as exc:
            self.absorb(exc)


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
