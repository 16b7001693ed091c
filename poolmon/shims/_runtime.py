"""The shim runtime: what every shim module shares, written once.

A shim module says *where* its library borrows, returns, creates, waits and evicts, and what its
ids and eviction reasons are. Everything about *recording* lives here and in the core:

* :class:`ShimState`: the one state type of a shim: its label, its :class:`PatchSet` (the one
  patch helper: symmetric, idempotent, identity-restoring), the registry new pools join, the
  pools attached so far (held weakly), and the one error absorber (:meth:`ShimState.absorb`): a
  failure of poolmon's own bookkeeping is counted in ``poolmon_shim_errors_total`` (label: the
  shim) and logged once per shim, place and exception type, never raised into the host;
* the one lifecycle (:meth:`ShimState.install`/:meth:`ShimState.uninstall`): a shim's
  ``instrument()``/``uninstrument()`` say only what to check, patch and detach;
* the install-time and non-hot hook shapes every shim repeats (:meth:`ShimState.create_failed`,
  :meth:`ShimState.attach_failed`, :meth:`ShimState.after`); the per-borrow and per-return hook
  bodies stay inline in each shim (a helper there is one more call on the hot path);
* the lane protocol (:mod:`poolmon.core.lane`): a shim's Python path records through the
  ledger's ``borrow``/``release``, which take the lock-free lane while it is open;
* link records (:func:`poolmon.core.compiled.new_link`): named fields, not tuple indices;
* the compiled hooks (:func:`poolmon.core.compiled.fast_method`): generic kinds parametrised by
  the shim with its attribute names; a new library adds no C.

See docs/architecture.md for the contract a new shim module follows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from poolmon.core.ledger import PoolLedger
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
    and never held while calling into the library. ``install_lock`` serialises
    :meth:`install` and :meth:`uninstall` (instrument and uninstrument from two threads).
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.patches = PatchSet(label)
        self.registry: PoolRegistry | None = None
        self.explicit_registry = False
        self.lock = threading.RLock()
        self.install_lock = threading.Lock()
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._detach: Callable[[], None] = self.forget_pools

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

    @property
    def installed(self) -> bool:
        """The shim's patches are in place (its ``is_instrumented()``)."""
        return self.patches.active

    def install(
        self,
        registry: PoolRegistry | None,
        *,
        ready: Callable[[], bool],
        patch: Callable[[], None],
        detach: Callable[[], None] | None = None,
    ) -> bool:
        """A shim's ``instrument()``: True if the shim is now active.

        Twice changes nothing (the first registry stays). ``ready`` says whether the library is
        importable and its version supported (an unsupported one is reported once by
        :func:`poolmon.shims._version.supported` and left untouched: False). ``patch`` installs
        the wrappers into :attr:`patches` (and whatever else the shim sets up); ``detach``
        forgets every attached pool (default: :meth:`forget_pools`). If ``patch`` raises,
        everything is undone (:meth:`uninstall`) and the error propagates.
        """
        with self.install_lock:
            if self.patches.active:
                return True
            if not ready():
                return False
            self._detach = detach if detach is not None else self.forget_pools
            self.start(registry)
            try:
                patch()
            except BaseException:
                self._uninstall()
                raise
            return True

    def uninstall(self) -> None:
        """A shim's ``uninstrument()``: restore every patched attribute to the identical original
        object, then detach the pools (the ``detach`` given to :meth:`install`)."""
        with self.install_lock:
            self._uninstall()

    def _uninstall(self) -> None:
        self.patches.restore()
        self._detach()

    def forget_pools(self) -> None:
        """The default detach: switch off and forget the attached pools, touching none of them."""
        self.take_pools()

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

    def create_failed(
        self, ledger: PoolLedger, t0: float, exc: BaseException, where: str = "create"
    ) -> None:
        """A connect that started at ``t0`` raised ``exc`` (re-raised by the caller): record it."""
        try:
            ledger.create_failed(t0, exc)
        except Exception as inner:
            self.absorb(inner, where)

    def attach_failed(self, pool: object, attr: str, exc: BaseException) -> None:
        """Registering ``pool`` failed: absorb ``exc`` and mark the pool (``attr`` = False) so a
        broken pool is not retried on every call."""
        self.absorb(exc, "attach")
        with contextlib.suppress(Exception):
            setattr(pool, attr, False)

    def after(
        self, original: Callable[..., Any], record: Callable[[Any], object], where: str
    ) -> Callable[..., Any]:
        """A wrapper that runs ``original`` and then ``record(self)``, absorbing its failures.

        For the once-per-object methods (a pool's ``__init__``, ``close``, ``resize``): it
        forwards ``*args, **kwargs``, which costs more than an exact signature, so never for a
        per-borrow or per-return method.
        """

        def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(obj, *args, **kwargs)
            try:
                record(obj)
            except Exception as exc:
                self.absorb(exc, where)
            return result

        return wrapper

    def absorber(self, where: str = "") -> Callable[[BaseException], None]:
        """:meth:`absorb` for one place: what the compiled hooks call with a failure."""

        def absorb(exc: BaseException) -> None:
            self.absorb(exc, where)

        return absorb
