"""The shim runtime: what every shim module shares, written once.

A shim module says *where* its library borrows, returns, creates, waits and evicts, and what its
ids and eviction reasons are. Everything about *recording* lives here and in the core:

* :class:`ShimState`: the one state type of a shim: its label, its :class:`PatchSet` (the one
  patch helper: symmetric, idempotent, identity-restoring), the registry new pools join, the
  pools attached so far (held weakly), and the one error absorber (:meth:`ShimState.absorb`): a
  failure of poolmon's own bookkeeping is counted in ``poolmon_shim_errors_total`` (label: the
  shim) and logged once per shim, place and exception type, never raised into the host;
* the lane protocol (:mod:`poolmon.core.lane`): a shim's Python path records through the
  ledger's ``borrow``/``release``, which take the lock-free lane while it is open;
* link records (:func:`poolmon.core.compiled.new_link`): named fields, not tuple indices;
* the compiled hooks (:func:`poolmon.core.compiled.fast_method`): generic kinds parametrised by
  the shim with its attribute names; a new library adds no C.

See docs/architecture.md for the contract a new shim module follows.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.shims._patch import PatchSet

__all__ = ["ShimState"]

_log = logging.getLogger("poolmon")


class ShimState:
    """The mutable state of one shim (one per library; module-level in its shim module).

    ``registry`` is what ``instrument()`` was given: None while off, else the registry new pools
    join (``instrument(registry=None)`` resolves the default one when each pool is first seen,
    so replacing the default registry works). ``lock`` guards first sight of a pool only (two
    threads meeting a new pool must not register it twice): it is never taken on the hot path
    and never held while calling into the library.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.patches = PatchSet(label)
        self.registry: PoolRegistry | None = None
        self.explicit_registry = False
        self.lock = threading.RLock()
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()

    @property
    def active(self) -> bool:
        return self.registry is not None

    def start(self, registry: PoolRegistry | None) -> None:
        """Switch on with ``registry`` (None: the default registry, resolved at first sight)."""
        self.explicit_registry = registry is not None
        self.registry = registry if registry is not None else get_default_registry()

    def target_registry(self) -> PoolRegistry:
        """Where a newly seen pool registers."""
        if self.registry is not None and self.explicit_registry:
            return self.registry
        return get_default_registry()

    def take_pools(self) -> list[Any]:
        """Switch off: the pools attached so far, forgotten here (for the shim to detach)."""
        with self.lock:
            pools = list(self.pools)
            self.pools = weakref.WeakSet()
            self.registry = None
            self.explicit_registry = False
        return pools

    def absorb(self, exc: BaseException, where: str = "") -> None:
        """A failure inside poolmon's own code: count it, log it once, never propagate it."""
        try:
            self.target_registry().self_metrics.inc("poolmon.shim.errors", self.label)
            log_once(
                _log,
                f"shim:{self.label}:{where}:{type(exc).__name__}",
                "poolmon: the %s shim absorbed %s%s; the application is unaffected, further "
                "failures are only counted in poolmon_shim_errors_total",
                self.label,
                scrub(f"{type(exc).__name__}: {exc}"),
                f" in {where}" if where else "",
            )
        except Exception:  # pragma: no cover - logging itself failed; nothing left to do
            pass

    def absorber(self, where: str = "") -> Callable[[BaseException], None]:
        """:meth:`absorb` for one place: what the compiled hooks call with a failure."""

        def absorb(exc: BaseException) -> None:
            self.absorb(exc, where)

        return absorb
