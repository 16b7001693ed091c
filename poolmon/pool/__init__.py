"""poolmon's own pools: :class:`Pool` (threads) and :class:`AsyncPool` (asyncio).

Generic over the resource (a :class:`Factory` opens, checks, resets and closes it); every step
is recorded in the pool's :class:`~poolmon.core.ledger.PoolLedger` as an event of the standard.
"""

from poolmon.pool.async_pool import AsyncPool
from poolmon.pool.config import PoolConfig, TenantQuota
from poolmon.pool.credentials import async_credentialed, credentialed
from poolmon.pool.factory import AsyncFactory, BaseAsyncFactory, BaseFactory, Factory, factory
from poolmon.pool.routing import RoutingPool
from poolmon.pool.sqlite import SqliteFactory
from poolmon.pool.sync_pool import Pool

__all__ = [
    "AsyncFactory",
    "AsyncPool",
    "BaseAsyncFactory",
    "BaseFactory",
    "Factory",
    "Pool",
    "PoolConfig",
    "RoutingPool",
    "SqliteFactory",
    "TenantQuota",
    "async_credentialed",
    "credentialed",
    "factory",
]
