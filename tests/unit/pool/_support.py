"""Shared helpers for the pool tests: a scriptable factory and an event recorder."""

from __future__ import annotations

import itertools
import json
from typing import Any

from poolmon.conformance import validate_stream
from poolmon.core.events import PoolEvent
from poolmon.core.registry import PoolRegistry
from poolmon.pool.factory import BaseFactory


class Res:
    """A fake resource; ``closed`` shows the pool destroyed it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"Res({self.n})"


class ScriptedFactory(BaseFactory[Res]):
    """Fails, validates and resets as the test says; counts every call."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.fail_create: Exception | None = None
        self.valid = True
        self.reset_error: Exception | None = None
        self.broken: set[int] = set()
        self.creates = 0
        self.validations = 0
        self.made: list[Res] = []

    def create(self) -> Res:
        self.creates += 1
        if self.fail_create is not None:
            raise self.fail_create
        res = Res(next(self._ids))
        self.made.append(res)
        return res

    def validate(self, conn: Res) -> bool:
        self.validations += 1
        return self.valid

    def reset(self, conn: Res) -> None:
        if self.reset_error is not None:
            raise self.reset_error

    def is_broken(self, conn: Res) -> bool:
        return conn.n in self.broken


class Recorder:
    """Collects every event of a registry as JSON lines (what a JSONL sink would write)."""

    def __init__(self, registry: PoolRegistry) -> None:
        self.lines: list[str] = []
        registry.subscribe(self._on_event)

    def _on_event(self, event: PoolEvent) -> None:
        self.lines.append(json.dumps(event.to_dict()))

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == kind]

    def reasons(self) -> list[str]:
        return [e["reason"] for e in self.kinds("evict")]

    def assert_valid(self) -> None:
        problems = validate_stream(self.lines)
        assert problems == [], "\n".join(str(p) for p in problems)
