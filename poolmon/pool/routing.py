"""RoutingPool: read/write routing over a primary pool and replica pools.

Routing is by explicit intent, never by parsing SQL: ``connection(readonly=True)`` may go to a
replica, anything else goes to the primary. Read-after-write: a write borrow in a context
(``contextvars``: a thread, an asyncio task, a request scope copied with it) sends that
context's reads to the primary for ``read_after_write`` seconds, so a caller reads what it just
wrote even though replicas lag.

Replica health. A replica is taken out of service when borrowing from it fails (its connects
fail, so the pool backs off and the borrow times out after ``probe_timeout``; or a validation
fails and the replacement cannot be opened). Reads then go to another healthy replica, or fail
over to the primary: the primary pool records an ``error`` of type ``failover`` in phase
``borrow`` (spec 1.1 section 14.5). :meth:`check` (call it periodically, or let
``maintain=True`` pools' owners schedule it) probes each replica out of service and puts it
back when a borrow from it succeeds.

Each member is a :class:`~poolmon.pool.Pool` of its own (named ``NAME/primary``,
``NAME/replica-1``...), with ``route`` and ``route_group`` on its open event; :meth:`routes`
gives the ``pool.route.info`` rows.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from poolmon.core.clock import Clock, system_clock
from poolmon.errors import ConfigError, PoolClosed, PoolError
from poolmon.pool.factory import Factory
from poolmon.pool.sync_pool import Pool

__all__ = ["RoutingPool"]

T = TypeVar("T")

_log = logging.getLogger("poolmon")


class RoutingPool(Generic[T]):
    """A primary pool and replica pools behind one ``connection(readonly=...)``."""

    def __init__(
        self,
        primary: Factory[T],
        replicas: Sequence[Factory[T]] = (),
        *,
        name: str = "routing",
        read_after_write: float = 1.0,
        probe_timeout: float = 1.0,
        clock: Clock | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(read_after_write, (int, float)) or read_after_write < 0:
            raise ConfigError("read_after_write", read_after_write, "seconds >= 0")
        if not isinstance(probe_timeout, (int, float)) or probe_timeout <= 0:
            raise ConfigError("probe_timeout", probe_timeout, "seconds > 0")
        self.name = name
        self._clock = clock if clock is not None else system_clock
        self._window = float(read_after_write)
        self._probe_timeout = float(probe_timeout)
        self.primary: Pool[T] = Pool(
            primary, name=f"{name}/primary", clock=clock, route=("primary", name), **options
        )
        self.replicas: list[Pool[T]] = [
            Pool(f, name=f"{name}/replica-{i}", clock=clock, route=("replica", name), **options)
            for i, f in enumerate(replicas, 1)
        ]
        self._healthy = [True] * len(self.replicas)
        self._next = 0
        # When this context last borrowed for writing (pool clock), per routing pool.
        self._last_write: contextvars.ContextVar[float | None] = contextvars.ContextVar(
            f"poolmon_last_write_{id(self)}", default=None
        )

    # ------------------------------------------------------------------ routing

    @contextmanager
    def connection(self, *, readonly: bool = False, timeout: float | None = None) -> Iterator[T]:
        """Borrow for a write (the primary) or, with ``readonly=True``, for a read (a healthy
        replica, unless this context wrote within ``read_after_write``)."""
        pool, conn = self._borrow(readonly=readonly, timeout=timeout)
        try:
            yield conn
        finally:
            pool.putconn(conn)

    def _borrow(self, *, readonly: bool, timeout: float | None) -> tuple[Pool[T], T]:
        now = self._clock.monotonic()
        if not readonly:
            self._last_write.set(now)
            return self.primary, self.primary.getconn(timeout)
        wrote = self._last_write.get()
        if wrote is not None and now - wrote < self._window:
            return self.primary, self.primary.getconn(timeout)  # read-after-write
        for index in self._healthy_order():
            replica = self.replicas[index]
            try:
                return replica, replica.getconn(
                    min(timeout or self._probe_timeout, self._probe_timeout)
                )
            except PoolClosed:
                raise
            except PoolError as exc:
                self._take_out(index, exc)
        if self.replicas:
            self.primary.ledger.error(
                "failover",
                "borrow",
                f"no healthy replica in {self.name!r}: read served by the primary",
            )
        return self.primary, self.primary.getconn(timeout)

    def _healthy_order(self) -> list[int]:
        """Healthy replicas, round-robin from the next one."""
        n = len(self.replicas)
        start = self._next
        self._next = (start + 1) % n if n else 0
        return [i % n for i in range(start, start + n) if self._healthy[i % n]]

    def _take_out(self, index: int, exc: BaseException) -> None:
        if self._healthy[index]:
            self._healthy[index] = False
            self.replicas[index].route_healthy = False
            _log.warning(
                "poolmon: %s taken out of service: %s",
                self.replicas[index].name,
                type(exc).__name__,
            )

    # ------------------------------------------------------------------ health

    def check(self) -> list[str]:
        """Probe every replica out of service; put back those that lend a connection again.
        Returns the names put back."""
        back = []
        for index, replica in enumerate(self.replicas):
            if self._healthy[index]:
                continue
            try:
                conn = replica.getconn(self._probe_timeout)
            except PoolError:
                continue
            replica.putconn(conn)
            self._healthy[index] = True
            replica.route_healthy = True
            back.append(replica.name)
        return back

    def healthy(self) -> dict[str, bool]:
        return {r.name: ok for r, ok in zip(self.replicas, self._healthy, strict=True)}

    def routes(self) -> list[dict[str, str]]:
        """The ``pool.route.info`` rows: one per member pool."""
        rows = [
            {
                "pool.name": self.primary.name,
                "pool.route": "primary",
                "pool.route.group": self.name,
                "pool.route.healthy": "true",
            }
        ]
        for replica, ok in zip(self.replicas, self._healthy, strict=True):
            rows.append(
                {
                    "pool.name": replica.name,
                    "pool.route": "replica",
                    "pool.route.group": self.name,
                    "pool.route.healthy": "true" if ok else "false",
                }
            )
        return rows

    def close(self) -> None:
        for pool in (self.primary, *self.replicas):
            pool.close()

    def __enter__(self) -> RoutingPool[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
