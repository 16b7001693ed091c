"""poolmon's exceptions. Errors carry state: a timeout says how many connections were used,
idle and waiting, so the message alone explains what happened."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poolmon.core.redact import scrub

if TYPE_CHECKING:
    from poolmon.core.snapshot import PoolSnapshot

__all__ = [
    "ConfigError",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolQuotaExceeded",
    "PoolShed",
    "PoolTimeout",
    "PoolmonError",
]


#: How much of a refused value a ConfigError message repeats.
_SHOWN_MAX = 200


class PoolmonError(Exception):
    """Base of every error poolmon raises."""


class ConfigError(PoolmonError, ValueError):
    """A configuration value is out of range. The message names the parameter and the range."""

    def __init__(self, parameter: str, value: object, accepted: str) -> None:
        self.parameter = parameter
        self.value = value
        self.accepted = accepted
        # A setting can be a credentialed URL or DSN: the message shows it only after scrubbing.
        shown = scrub(repr(value))
        if len(shown) > _SHOWN_MAX:  # a huge value is not repeated back whole
            shown = f"{shown[:_SHOWN_MAX]}...({len(shown)} characters)"
        super().__init__(f"{parameter}={shown} is invalid: expected {accepted}")


class PoolError(PoolmonError):
    """A pool operation failed; ``snapshot`` is the pool's state at that moment (may be None)."""

    def __init__(self, message: str, snapshot: PoolSnapshot | None = None) -> None:
        self.snapshot = snapshot
        if snapshot is not None:
            limit = "unbounded" if snapshot.max is None else str(snapshot.max)
            message = (
                f"{message} (pool {snapshot.name!r}: used={snapshot.used}, idle={snapshot.idle}, "
                f"waiting={snapshot.pending}, max={limit})"
            )
        super().__init__(scrub(message))


class PoolTimeout(PoolError, TimeoutError):
    """No connection became available within the borrow timeout."""


class PoolExhausted(PoolError):
    """The pool refused at once: fail-fast mode, or too many callers already waiting."""


class PoolQuotaExceeded(PoolExhausted):
    """A tenant is at its connection limit: refused at once (``tenant_policy="refuse"``), or
    its wait ended at the timeout while only its own quota kept it waiting."""


class PoolShed(PoolExhausted):
    """Adaptive backpressure refused at once: the caller's estimated wait exceeds the pool's
    ``wait_budget`` (estimated from recent use times and the queue depth)."""


class PoolClosed(PoolError):
    """The pool is closed (or was closed while the caller waited)."""
