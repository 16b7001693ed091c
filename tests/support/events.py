"""Collect a registry's events in tests and compare them as short sequences."""

from __future__ import annotations

import json
import threading
from typing import Any

from poolmon.conformance import validate_stream
from poolmon.core.events import PoolEvent
from poolmon.core.registry import PoolRegistry

__all__ = ["Events"]


class Events:
    """Every event of every pool in a registry, as the dicts written to JSONL."""

    def __init__(self, registry: PoolRegistry) -> None:
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # pools of several threads report here
        registry.subscribe(self._add)

    def _add(self, event: PoolEvent) -> None:
        with self._lock:
            self.items.append(event.to_dict())

    def seq(self, pool: str | None = None) -> list[tuple[Any, ...]]:
        """(kind, conn, detail) per event, ``open`` left out; detail is the reason/outcome/type."""
        out = []
        for e in self.items:
            if e["kind"] == "open" or (pool is not None and e["pool"] != pool):
                continue
            detail = e.get("reason") or e.get("error_type") or e.get("outcome")
            if e["kind"] == "borrow" and e.get("queued"):
                detail = "queued"
            out.append((e["kind"], e.get("conn"), detail))
        return out

    def assert_conformant(self) -> None:
        problems = validate_stream([json.dumps(e) for e in self.items])
        assert problems == [], problems
