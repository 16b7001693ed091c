"""poolmon's bookkeeping attributes on library objects, kept without ever reading ``__dict__``.

CPython 3.11+ keeps an instance's attributes in an inline values array, and the interpreter
specialises ``self.x`` on such objects into a direct index. Reading ``obj.__dict__`` (or
``vars(obj)``) makes a real dict for that object for good; in 3.11 attribute reads on it can no
longer be specialised, so every ``self.x`` in the *library's* own code on that object takes the
generic lookup from then on. Measured with callgrind on redis-py 8.1: one ``__dict__`` read on a
pool raised a plain ``get_connection()``/``release()`` cycle from 62.5k to 66.5k instructions,
more than all of poolmon's own work on that cycle. ``getattr``, ``setattr``
and ``delattr`` keep the inline values, so the shims use only these (``tests/unit/
test_shim_attrs.py`` checks that no shim reads a library object's ``__dict__``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, TypeVar

__all__ = ["drop_attr", "pop_attr", "setdefault_attr"]

T = TypeVar("T")

# Held only around a getattr and a setattr (no I/O, no await): safe from asyncio code too.
_claim_lock = threading.Lock()


def drop_attr(obj: Any, name: str) -> None:
    """Delete ``obj.<name>`` if it is set, whatever its value."""
    with contextlib.suppress(AttributeError):
        delattr(obj, name)


def pop_attr(obj: Any, name: str) -> Any:
    """Remove ``obj.<name>`` and return it; ``None`` when absent (or ``None``).

    Of several threads popping the same attribute at once exactly one gets the value: ``delattr``
    succeeds once, and the others see the ``AttributeError`` and get ``None``, as with
    ``dict.pop`` (an eviction must be recorded once).
    """
    value = getattr(obj, name, None)
    if value is None:
        return None
    try:
        delattr(obj, name)
    except AttributeError:
        return None  # another thread popped it first: the value is theirs
    return value


def setdefault_attr(obj: Any, name: str, value: T) -> T:
    """``obj.<name>`` if set (not ``None``), else set it to ``value``; returns the winner.

    Two threads attaching the same object at once agree on the first value.
    """
    with _claim_lock:
        current: T | None = getattr(obj, name, None)
        if current is not None:
            return current
        setattr(obj, name, value)
        return value
