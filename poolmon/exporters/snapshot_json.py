"""``/poolmon/snapshot.json``: each pool's live state with its outstanding borrows, beside /metrics.

``/metrics`` carries numbers; what it cannot carry is *which* borrows are outstanding and where
they were made. This document adds them, for ``poolmon top``'s detail view and ``poolmon doctor``
(leak findings with the borrow site). Stacks are present only for borrows the pool sampled
(``stack_sample_every``). Every string passes :func:`poolmon.core.redact.scrub`; a pool's
borrows are capped at :data:`MAX_BORROWS`, oldest first.

Schema (version 1)::

    {"schema": 1, "pools": [{"name", "pid", "system", "used", "idle", "pending", "max",
      "oldest_use", "borrows": [{"conn", "age", "stack"}]}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry

__all__ = ["MAX_BORROWS", "SNAPSHOT_PATH", "snapshot_app", "snapshot_document"]

#: Where the document is served, on the same server as /metrics.
SNAPSHOT_PATH: Final = "/poolmon/snapshot.json"
#: Outstanding borrows listed per pool (oldest first).
MAX_BORROWS: Final = 100
SCHEMA: Final = 1

_App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def snapshot_document(registry: PoolRegistry | None = None) -> dict[str, Any]:
    """The document for ``registry`` (default: the default registry)."""
    reg = registry if registry is not None else get_default_registry()
    pools = []
    for ledger in reg.ledgers():
        snap = ledger.snapshot()
        borrows = ledger.leaks(0.0)[:MAX_BORROWS]  # every outstanding borrow, oldest first
        pools.append(
            {
                "name": scrub(snap.name),
                "pid": snap.identity.pid,
                "system": snap.identity.system,
                "used": snap.used,
                "idle": snap.idle,
                "pending": snap.pending,
                "max": snap.max,
                "oldest_use": snap.oldest_use,
                "borrows": [
                    {
                        "conn": b.conn,
                        "age": b.age,
                        "stack": None if b.stack is None else scrub(b.stack),
                    }
                    for b in borrows
                ],
            }
        )
    return {"schema": SCHEMA, "pools": pools}


def snapshot_app(app: _App, registry: PoolRegistry | None = None) -> _App:
    """``app`` (the /metrics WSGI app) answering :data:`SNAPSHOT_PATH` itself."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != SNAPSHOT_PATH:
            return app(environ, start_response)
        try:
            body = json.dumps(snapshot_document(registry)).encode()
            status = "200 OK"
        except Exception as exc:  # observation never breaks the host: answer, do not raise
            body = json.dumps({"error": scrub(f"{type(exc).__name__}: {exc}")}).encode()
            status = "500 Internal Server Error"
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wrapped
