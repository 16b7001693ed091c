"""The registry survives its owners being collected at any moment, even inside its own lock.

Found by running urllib3's own test suite with the shim on: a pool's weakref callback ran inside
garbage collection triggered while the same thread held the registry's (non-reentrant) lock, and
the callback waited for that lock forever.
"""

from __future__ import annotations

import threading

from poolmon.core.identity import PoolIdentity
from poolmon.core.registry import PoolRegistry


class _Owner:
    """Stands in for a library pool object (held weakly by the registry)."""


def _identity(name: str) -> PoolIdentity:
    return PoolIdentity(name=name, system="http", server_address="127.0.0.1", server_port=80)


def _in_thread(fn: object) -> bool:
    """Run ``fn`` in a daemon thread; True if it finished (False: it deadlocked)."""
    assert callable(fn)
    worker = threading.Thread(target=fn, daemon=True)
    worker.start()
    worker.join(10)  # a deadline for detecting a deadlock, not a timing assertion
    return not worker.is_alive()


def test_owner_collected_while_this_thread_holds_the_lock() -> None:
    registry = PoolRegistry()
    owners = [_Owner()]
    registry.register(_identity("http://a:80"), owner=owners[0])

    def collect_inside_lock() -> None:
        # What garbage collection does when it starts on an allocation inside a locked section:
        # the last reference goes and the weakref callback runs right here, lock held.
        with registry._lock:
            owners.clear()

    assert _in_thread(collect_inside_lock), "the weakref callback deadlocked on the registry lock"
    assert registry.get("http://a:80") is None
    assert registry.ledgers() == ()


def test_owner_collected_while_another_thread_holds_the_lock() -> None:
    registry = PoolRegistry()
    owners = [_Owner()]
    kept = _Owner()
    registry.register(_identity("http://a:80"), owner=owners[0])
    registry.register(_identity("http://b:80"), owner=kept)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with registry._lock:
            held.set()
            release.wait(30)  # longer than _in_thread's deadline

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert held.wait(10)
    # The callback must not wait for the other thread either (it may run anywhere, e.g. in a
    # thread that the holder is itself waiting for).
    assert _in_thread(owners.clear)
    release.set()
    holder.join(10)
    assert [ledger.name for ledger in registry.ledgers()] == ["http://b:80"]
    # The name is free again once the dropped pool is really gone.
    again = _Owner()
    assert registry.register(_identity("http://a:80"), owner=again).name == "http://a:80"


def test_replaced_name_is_not_dropped_by_a_late_callback() -> None:
    registry = PoolRegistry()
    first = [_Owner()]
    ledger = registry.register(_identity("http://a:80"), owner=first[0])
    registry.unregister(ledger)
    second = _Owner()
    registry.register(_identity("http://a:80"), owner=second)
    first.clear()  # the first owner's callback must leave the new pool of the same name alone
    assert [ledger.name for ledger in registry.ledgers()] == ["http://a:80"]
