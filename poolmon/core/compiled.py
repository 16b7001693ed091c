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

from poolmon.core.lane import HotLane, LaneProtocol, LendTable, Link

__all__ = [
    "HOT_KINDS",
    "PURE_PYTHON_ENV",
    "compiled_module",
    "fast_method",
    "new_id_table",
    "new_lane",
    "new_lend_table",
    "new_link",
    "set_compiled",
]

#: The compiled wrapper kinds (poolmon/_hot.c): generic, parametrised by the shims.
HOT_KINDS: Final = ("BORROW", "RELEASE", "SKIP_IF_TRUTHY")

#: Environment variable: any value but empty or ``0`` turns the compiled fast path off.
PURE_PYTHON_ENV: Final = "POOLMON_PURE_PYTHON"

_override: bool | None = None


def set_compiled(*, enabled: bool | None) -> None:
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
        from poolmon import _hot
    except ImportError:
        return None
    module: ModuleType = _hot
    return module


def new_lane(
    now: Callable[[], float], wait_bounds: Sequence[float], use_bounds: Sequence[float]
) -> LaneProtocol:
    """A hot lane for a new ledger, with the ledger's wait and use bucket bounds: the compiled
    one when enabled (the compiled wrappers write only to it), else
    :class:`poolmon.core.lane.HotLane`. Both have the same interface."""
    hot = compiled_module()
    if hot is not None:
        lane: LaneProtocol = hot.Lane(now, wait_bounds, use_bounds)
        return lane
    return HotLane(now, wait_bounds, use_bounds)


def new_link(
    lane: Any,
    cid: int | None = None,
    key: object = None,
    items: object = None,
    table: Any = None,
) -> Any:
    """A link record (:class:`poolmon.core.lane.Link`) for ``lane``: the compiled one when the
    lane is compiled (the compiled hooks read only those), else the Python one."""
    hot = compiled_module()
    if hot is not None and type(lane) is hot.Lane:
        return hot.Link(lane, cid, key, items, table)
    return Link(lane, cid, key, items, table)


def new_id_table(lane: Any) -> Any:
    """An ``id(obj) -> ledger id`` table for a pool link's ``table`` on a compiled ``lane`` (a
    ``poolmon._hot.Borrowed``, which the compiled lend table reads in a few instructions), or
    None where the lane is the Python one (the Python lend table reads no table)."""
    hot = compiled_module()
    if hot is not None and type(lane) is hot.Lane:
        return hot.Borrowed()
    return None


def new_lend_table(
    link: Any,
    lent: Callable[[Any], object],
    returned: Callable[[Any], object],
    absorb: Callable[[BaseException], object],
) -> dict[Any, Any]:
    """A :class:`poolmon.core.lane.LendTable` on the pool ``link``: the compiled one when the
    link is compiled (it then records the common borrow and return itself), else the Python
    one, which hands every write to ``lent``/``returned``."""
    hot = compiled_module()
    if hot is not None and type(link) is hot.Link:
        table: dict[Any, Any] = hot.LendTable(link, lent, returned, absorb)
        return table
    return LendTable(link, lent, returned, absorb)


def fast_method(
    kind: str, original: Callable[..., Any], slow: Callable[..., Any], **params: Any
) -> Callable[..., Any]:
    """The compiled wrapper of ``kind`` (one of :data:`HOT_KINDS`) around ``original``, handing
    every call outside its common case to ``slow``; just ``slow`` when not compiled.

    ``params`` say, in the library's terms, what the common case is and where its links are:

    * ``absorb(exc)``: a bookkeeping failure (required);
    * ``failed(self, conn, t0, exc)``: the original raised; ``adopt(self, conn, extra)``: the
      original lent or took back a connection without a live link;
    * ``exact_type``: the only class of ``self`` taken (subclasses go to ``slow``);
    * ``unless``: an attribute of ``self`` that must be falsy;
    * ``pool_link``: the attribute of ``self`` holding the pool's :class:`Link`; ``need_items``:
      its ``items`` must be non-empty (no wait possible); ``timed``: measure the wait from it;
    * ``conn_link``: the attribute of the connection holding its link (required for BORROW
      and RELEASE); ``match_key``: its ``key`` must be the pool link's;
    * ``owner_attr``: an attribute of the connection that must be ``self`` (RELEASE);
    * ``answer``: RELEASE skips the original, known to do nothing more, and returns this;
    * ``defaults``: arguments after the fixed ones, when given, must be these (RELEASE
      without it takes exactly ``(self, conn)``, no keywords);
    * ``attr``: SKIP_IF_TRUTHY's attribute of ``self``.
    """
    if kind not in HOT_KINDS:
        raise ValueError(f"fast_method: kind must be one of {HOT_KINDS}, got {kind!r}")
    hot = compiled_module()
    if hot is None:
        return slow
    wrapper: Callable[..., Any] = hot.HotMethod(getattr(hot, kind), original, slow, **params)
    return wrapper
