"""The standard's events as Python objects.

The hot path never builds these: a ledger creates a :class:`PoolEvent` only when a subscriber is
attached. ``to_dict`` gives the JSON form of spec/event.schema.json (absent fields omitted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from poolmon.core.catalog import SPEC_VERSION
from poolmon.core.redact import scrub

__all__ = [
    "BORROW",
    "CLOSE",
    "CREATE",
    "ERROR",
    "EVICT",
    "OPEN",
    "RETURN",
    "VALIDATE",
    "WAIT",
    "PoolEvent",
]

OPEN: Final = "open"
CREATE: Final = "create"
VALIDATE: Final = "validate"
WAIT: Final = "wait"
BORROW: Final = "borrow"
RETURN: Final = "return"
EVICT: Final = "evict"
ERROR: Final = "error"
CLOSE: Final = "close"

_MESSAGE_LIMIT: Final = 4096

_OPTIONAL_FIELDS: Final = (
    "pid",
    "conn",
    "duration",
    "outcome",
    "reason",
    "age",
    "error_type",
    "phase",
    "message",
    "pending",
    "queued",
    "stack",
    "system",
    "resource",
    "server_address",
    "server_port",
    "namespace",
    "library",
    "library_version",
    "max",
    "min",
    "idle_max",
    "shared_max",
    "tenant",
    "priority",
    "burst",
    "route",
    "route_group",
    "burst_max",
    "streams",
    "max_streams",
)


@dataclass(slots=True)
class PoolEvent:
    """One event of the standard. ``kind`` is one of the module's constants.

    Treat it as read-only. It is deliberately not ``frozen``: a frozen dataclass assigns each of
    its 24 fields through ``object.__setattr__``, which made building one several times dearer
    than the borrow it describes.
    """

    kind: str
    ts: float
    pool: str
    pid: int | None = None
    conn: int | None = None
    duration: float | None = None
    outcome: str | None = None
    reason: str | None = None
    age: float | None = None
    error_type: str | None = None
    phase: str | None = None
    message: str | None = None
    pending: int | None = None
    queued: bool | None = None
    stack: str | None = None
    system: str | None = None
    resource: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    namespace: str | None = None
    library: str | None = None
    library_version: str | None = None
    max: int | None = None
    min: int | None = None
    idle_max: int | None = None
    #: Spec 1.1 (open): a limit this pool shares with the other pools of one client object.
    shared_max: int | None = None
    # 1.1 (the second-wave pool): who asked, how urgently, which kind of connection/member.
    tenant: str | None = None
    priority: int | None = None
    burst: bool | None = None
    route: str | None = None
    route_group: str | None = None
    burst_max: int | None = None
    #: Spec 1.1, multiplexed connections: streams in use after a borrow/return, the stream limit.
    streams: int | None = None
    max_streams: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-line form: ``v``, ``kind``, ``ts``, ``pool`` and the fields that are set.

        Free text (``message``, ``stack``) passes through :func:`poolmon.core.redact.scrub` here, so
        no sink can write a secret even if a caller handed one in.
        """
        out: dict[str, Any] = {
            "v": SPEC_VERSION,
            "kind": self.kind,
            "ts": self.ts,
            "pool": self.pool,
        }
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "message":
                value = scrub(str(value))[:_MESSAGE_LIMIT]
            elif name == "stack":
                value = scrub(str(value))
            out[name] = value
        return out
