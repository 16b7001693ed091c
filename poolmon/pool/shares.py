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


class _Tenant:
    """One tenant's live counts and quota (kept while it holds or is configured)."""

    __slots__ = ("configured", "holds", "limit", "reserve", "stats", "used")

    def __init__(
        self, limit: int | None, reserve: int, stats: TenantStats, *, configured: bool
    ) -> None:
        self.limit = limit if limit is not None else _NO_LIMIT
        self.reserve = reserve
        self.used = 0
        self.holds = 0  # slots reserved for its creates in flight, counted like lent ones
        self.stats = stats
        self.configured = configured


_NO_LIMIT = 1 << 62


class Shares:
    """Tenant quotas, reserves and priority ranks of one pool (critical section only)."""

    __slots__ = (
        "_aging",
        "_cap",
        "_classes",
        "_default_limit",
        "_names",
        "_stats",
        "_tenants",
        "capacity",
        "policy",
        "prio_on",
        "tenants_on",
        "total",
        "unmet",
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
        self._names: dict[str, str] = {}
        self._stats: dict[str, TenantStats] = {}
        self._tenants: dict[str, _Tenant] = {}
        #: Connections lent to (or being opened for) any tenant.
        self.total = 0
        #: Sum over tenants of their reserve not covered by what they hold.
        self.unmet = 0
        for name, quota in (cfg.tenants or {}).items():
            if isinstance(quota, TenantQuota):
                limit = quota.limit if quota.limit is not None else cfg.tenant_limit
                reserve = quota.reserve
            else:
                limit, reserve = int(quota), 0
            self._tenants[name] = _Tenant(limit, reserve, self._stat(name), configured=True)
            self.unmet += reserve

    # ------------------------------------------------------------------ priorities

    def priority(self, priority: int | None) -> int:
        """The class of a borrow (0 when not given); ConfigError for an unknown one."""
        if priority is None:
            return 0
        top = self._classes - 1
        if priority.__class__ is not int or not 0 <= priority <= top:
            raise ConfigError("priority", priority, f"an int in [0, priorities - 1 = {top}]")
        return priority

    def rank(self, prio: int, t0: float, now: float) -> tuple[int, float]:
        """Smaller is served first: the aged class, then arrival."""
        if prio:
            prio = max(0, prio - int((now - t0) / self._aging))
        return prio, t0

    def check(self, tenant: str | None, priority: int | None) -> tuple[str, int]:
        """A borrow's tenant key and class in one call (the fast path), or ConfigError."""
        if tenant is None:
            key = DEFAULT_TENANT
        elif tenant.__class__ is str and tenant and tenant != OTHER:
            key = tenant
        else:
            key = self.key(tenant)  # raises
        if priority is None:
            return key, 0
        if priority.__class__ is int and 0 <= priority < self._classes:
            return key, priority
        return key, self.priority(priority)  # raises

    # ------------------------------------------------------------------ tenants

    def key(self, tenant: str | None) -> str:
        if tenant is None:
            return DEFAULT_TENANT
        if tenant.__class__ is not str or not tenant or tenant == OTHER:
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

    def _state(self, key: str) -> _Tenant:
        state = self._tenants.get(key)
        if state is None:
            state = _Tenant(self._default_limit, 0, self._stat(key), configured=False)
            self._tenants[key] = state
        return state

    def limit(self, key: str) -> int | None:
        state = self._tenants.get(key)
        limit = state.limit if state is not None else self._default_limit
        return None if limit is None or limit == _NO_LIMIT else limit

    def held(self, key: str) -> int:
        state = self._tenants.get(key)
        return 0 if state is None else state.used

    def admits(self, key: str) -> bool:
        """May ``key`` take one more connection now (see the module docstring)?"""
        state = self._tenants.get(key)
        if state is None:  # holds nothing, no reserve, limit >= 1 (checked in the config)
            return self.total + self.unmet < self.capacity
        taken = state.used + state.holds
        if taken >= state.limit:
            return False
        if taken < state.reserve:
            return True
        # Its own reserve is covered (taken >= reserve): only the others' unmet reserves count.
        return self.total + self.unmet < self.capacity

    def take(self, key: str) -> bool:
        """``admits`` and ``lend`` in one step (the borrow fast path); False: not admitted."""
        if not self.tenants_on:
            return True
        state = self._tenants.get(key)
        if state is None:
            if self.total + self.unmet >= self.capacity:
                return False
            state = self._state(key)
        else:
            taken = state.used + state.holds
            if taken >= state.limit:
                return False
            if taken >= state.reserve and self.total + self.unmet >= self.capacity:
                return False
            if taken < state.reserve:
                self.unmet -= 1
        self.total += 1
        state.used += 1
        state.stats.borrows += 1
        return True

    def untake(self, key: str) -> None:
        """Undo a ``take`` whose connection was not lent after all (it needs a check)."""
        if self.tenants_on:
            state = self._tenants[key]
            state.stats.borrows -= 1
            state.used -= 1
            self._give_back(key, state)

    def at_limit(self, key: str) -> bool:
        state = self._tenants.get(key)
        return state is not None and state.used >= state.limit

    def _take(self, state: _Tenant) -> None:
        if state.used + state.holds < state.reserve:
            self.unmet -= 1
        self.total += 1

    def _give_back(self, key: str, state: _Tenant) -> None:
        self.total -= 1
        if state.used + state.holds < state.reserve:
            self.unmet += 1
        elif not state.configured and not state.used and not state.holds:
            del self._tenants[key]  # unconfigured and idle: the map stays as small as the active

    def hold(self, key: str) -> None:
        state = self._state(key)
        self._take(state)
        state.holds += 1

    def unhold(self, key: str) -> None:
        state = self._tenants[key]
        state.holds -= 1
        self._give_back(key, state)

    def lend(self, key: str) -> None:
        state = self._tenants.get(key)
        if state is None:
            state = self._state(key)
        self._take(state)
        state.used += 1
        state.stats.borrows += 1

    def unlend(self, key: str) -> None:
        state = self._tenants[key]
        state.used -= 1
        self.total -= 1
        if state.used + state.holds < state.reserve:
            self.unmet += 1
        elif not state.configured and not state.used and not state.holds:
            del self._tenants[key]

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
        out = {
            shown: TenantStats(0, None, stats.borrows, dict(stats.errors))
            for shown, stats in self._stats.items()
        }
        for key, state in self._tenants.items():
            shown = self.name(key) or DEFAULT_TENANT
            out.setdefault(shown, TenantStats()).used += state.used
        for shown, stats in out.items():
            if shown != OTHER:
                stats.limit = self.limit(shown)
        return out
