"""Shares: who may take a connection next, when a pool has tenants or priority classes.

One object per pool, read and written only inside the pool's critical section (the lock in
:class:`~poolmon.pool.Pool`, between awaits in :class:`~poolmon.pool.AsyncPool`).

Tenants. Every borrow of a pool with tenants belongs to one (``""``: the default tenant, with
``tenant_limit``). A tenant may take a connection while it holds fewer than its ``limit`` and
taking one leaves enough connections for the other tenants' unused reserves (``reserve``):
``total + unmet_reserves(others) < capacity``, where ``total`` counts every connection lent
to any tenant. Under its own reserve a tenant is always admitted (the reserves sum to at most
``max_size``). Unused quota is simply not counted, so it is usable by everyone else.

Priorities. A waiter's rank is ``(class - floor(waited / aging), t0)`` floored at class 0:
more urgent classes first, then arrival. A class-k waiter reaches class 0 after ``k * aging``
seconds of waiting and from then on only waiters that queued before it can precede it: that is
the aging bound (``docs/pool.md``, tested in ``tests/unit/pool/test_priorities.py``).

Cardinality. Tenant names reach events and metric attributes folded: the first ``tenant_cap``
distinct names keep theirs, every later one is reported as ``"other"``. Quotas apply to the
real name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from poolmon.errors import ConfigError
from poolmon.pool.config import PoolConfig, TenantQuota

__all__ = ["DEFAULT_TENANT", "OTHER", "Shares", "TenantStats"]

#: The tenant of a borrow that names none (in a pool with tenants).
DEFAULT_TENANT = ""
#: What tenants past the cardinality cap are reported as.
OTHER = "other"


@dataclass(slots=True)
class TenantStats:
    """One reported tenant's numbers (``Pool.tenant_stats()``; folded names add up)."""

    used: int = 0
    limit: int | None = None
    borrows: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class Shares:
    """Tenant quotas, reserves and priority ranks of one pool (critical section only)."""

    __slots__ = (
        "_aging",
        "_cap",
        "_classes",
        "_default_limit",
        "_limits",
        "_names",
        "_reserves",
        "_stats",
        "capacity",
        "holds",
        "policy",
        "prio_on",
        "tenants_on",
        "total",
        "used",
    )

    def __init__(self, cfg: PoolConfig) -> None:
        self.tenants_on = cfg.tenants_on
        self.prio_on = cfg.priorities > 1
        self.policy = cfg.tenant_policy
        self.capacity = cfg.ceiling
        self._classes = cfg.priorities
        self._aging = cfg.aging
        self._cap = cfg.tenant_cap
        self._default_limit = cfg.tenant_limit
        self._limits: dict[str, int | None] = {}
        self._reserves: dict[str, int] = {}
        for name, quota in (cfg.tenants or {}).items():
            if isinstance(quota, TenantQuota):
                self._limits[name] = quota.limit if quota.limit is not None else cfg.tenant_limit
                if quota.reserve:
                    self._reserves[name] = quota.reserve
            else:
                self._limits[name] = int(quota)
        self.used: dict[str, int] = {}
        #: Slots reserved for a tenant's create in flight (counted like a lent connection).
        self.holds: dict[str, int] = {}
        self.total = 0
        self._names: dict[str, str] = {}
        self._stats: dict[str, TenantStats] = {}

    # ------------------------------------------------------------------ priorities

    def priority(self, priority: int | None) -> int:
        """The class of a borrow (0 when not given); ConfigError for an unknown one."""
        if priority is None:
            return 0
        top = self._classes - 1
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= top:
            raise ConfigError("priority", priority, f"an int in [0, priorities - 1 = {top}]")
        return priority

    def rank(self, prio: int, t0: float, now: float) -> tuple[int, float]:
        """Smaller is served first: the aged class, then arrival."""
        if prio:
            prio = max(0, prio - int((now - t0) / self._aging))
        return prio, t0

    # ------------------------------------------------------------------ tenants

    def key(self, tenant: str | None) -> str:
        if tenant is None:
            return DEFAULT_TENANT
        if not isinstance(tenant, str) or not tenant or tenant == OTHER:
            raise ConfigError("tenant", tenant, "a non-empty str other than 'other', or None")
        return tenant

    def name(self, key: str) -> str | None:
        """The reported (folded) name of a tenant key; None for the default tenant."""
        if key == DEFAULT_TENANT:
            return None
        shown = self._names.get(key)
        if shown is None:
            shown = key if len(self._names) < self._cap else OTHER
            if shown != OTHER or len(self._names) < self._cap * 4:
                self._names[key] = shown  # remember: folded names stay folded (bounded map)
        return shown

    def limit(self, key: str) -> int | None:
        return self._limits.get(key, self._default_limit)

    def admits(self, key: str) -> bool:
        """May ``key`` take one more connection now (see the module docstring)?"""
        if not self.tenants_on:
            return True
        used = self.used.get(key, 0) + self.holds.get(key, 0)
        limit = self.limit(key)
        if limit is not None and used >= limit:
            return False
        if used < self._reserves.get(key, 0):
            return True
        unmet = 0
        for other, reserve in self._reserves.items():
            if other != key:
                unmet += max(0, reserve - self.used.get(other, 0) - self.holds.get(other, 0))
        return self.total + unmet < self.capacity

    def at_limit(self, key: str) -> bool:
        limit = self.limit(key)
        return limit is not None and self.used.get(key, 0) >= limit

    def hold(self, key: str) -> None:
        self.holds[key] = self.holds.get(key, 0) + 1
        self.total += 1

    def unhold(self, key: str) -> None:
        _drop(self.holds, key)
        self.total -= 1

    def lend(self, key: str) -> None:
        self.used[key] = self.used.get(key, 0) + 1
        self.total += 1
        self._stat(key).borrows += 1

    def unlend(self, key: str) -> None:
        _drop(self.used, key)
        self.total -= 1

    def failed(self, key: str, error_type: str) -> None:
        errors = self._stat(key).errors
        errors[error_type] = errors.get(error_type, 0) + 1

    def _stat(self, key: str) -> TenantStats:
        shown = self.name(key) or DEFAULT_TENANT
        stats = self._stats.get(shown)
        if stats is None:
            stats = self._stats[shown] = TenantStats()
        return stats

    def stats(self) -> dict[str, TenantStats]:
        """Per reported tenant: used now, limit, borrows and errors (``""``: the default)."""
        out: dict[str, TenantStats] = {}
        for shown, stats in self._stats.items():
            out[shown] = TenantStats(0, None, stats.borrows, dict(stats.errors))
        for key, used in self.used.items():
            shown = self.name(key) or DEFAULT_TENANT
            out.setdefault(shown, TenantStats()).used += used
        for shown, stats in out.items():
            if shown != OTHER:
                stats.limit = self.limit(shown)
        return out


def _drop(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)  # no zero entries: the maps stay as small as the active tenants
