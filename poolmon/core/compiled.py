"""Whether poolmon's compiled fast path (the C module ``poolmon._hot``) is used, and its switch.

``poolmon._hot`` re-implements the common case of the shims' borrow and return wrappers and the
ledger's hot lane (``poolmon/_hot.c`` explains why a Python wrapper cannot meet the overhead
bars). It is built when poolmon is installed from source with a C compiler and Python's headers;
where it is missing, or with ``POOLMON_PURE_PYTHON=1`` in the environment, everything runs the
pure-Python implementation, which stays the reference: same events, same numbers, more overhead.

The choice is read when a ledger is made and when a shim is installed, so a test or a benchmark
can compare both in one process (:func:`set_compiled`, then re-instrument).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final

__all__ = [
    "PURE_PYTHON_ENV",
    "compiled_module",
    "fast_method",
    "new_lane",
    "set_compiled",
]

#: Environment variable: any value but empty or ``0`` turns the compiled fast path off.
PURE_PYTHON_ENV: Final = "POOLMON_PURE_PYTHON"

_override: bool | None = None


def set_compiled(enabled: bool | None) -> None:
    """Force the compiled fast path on (where built) or off; ``None`` goes back to the
    environment. Affects ledgers made and shims installed from now on."""
    global _override
    _override = enabled


def compiled_module() -> ModuleType | None:
    """``poolmon._hot`` when it is built and enabled, else None."""
    enabled = _override
    if enabled is None:
        enabled = os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")
    if not enabled:
        return None
    try:
        from poolmon import _hot  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _hot
    return module


def new_lane(
    now: Callable[[], float], wait_bounds: Sequence[float], use_bounds: Sequence[float]
) -> Any:
    """A hot lane for a new ledger, with the ledger's wait and use bucket bounds: the compiled
    one when enabled (the compiled wrappers write only to it), else
    :class:`poolmon.core.lane.HotLane`. Both have the same interface."""
    hot = compiled_module()
    if hot is not None:
        return hot.Lane(now, wait_bounds, use_bounds)
    from poolmon.core.lane import HotLane

    return HotLane(now, wait_bounds, use_bounds)


def fast_method(
    kind: str, original: Callable[..., Any], slow: Callable[..., Any], **hooks: Any
) -> Callable[..., Any]:
    """The compiled wrapper of ``kind`` (a constant of ``poolmon._hot``) around ``original``,
    handing every call outside its common case to ``slow``; just ``slow`` when not compiled.

    ``hooks`` are the Python callbacks the compiled path calls for rare outcomes (``failed``,
    ``adopt``, ``absorb``) and its constants (``owner``, ``attr``).
    """
    hot = compiled_module()
    if hot is None:
        return slow
    wrapper: Callable[..., Any] = hot.HotMethod(getattr(hot, kind), original, slow, **hooks)
    return wrapper
