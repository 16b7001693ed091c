"""Reading PgBouncer, PostgreSQL and poolmon's exposition directly, to compare them."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from poolmon.backends import Poller, attach
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import register_collector

Labels = Mapping[str, str]


def admin_rows(admin_dsn: str, command: str) -> list[dict[str, Any]]:
    with psycopg.connect(admin_dsn, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.execute(command)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Synchronise on observed state (a deadline, not a sleep standing in for it)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Exposition:
    """poolmon's /metrics text for a poller (and a pool registry), parsed into samples."""

    def __init__(self, poller: Poller, registry: PoolRegistry | None = None) -> None:
        self.prom = CollectorRegistry(auto_describe=False)
        self.collector = register_collector(self.prom, registry=registry or PoolRegistry())
        attach(poller, self.collector)

    def text(self) -> str:
        return generate_latest(self.prom).decode()

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(self.text())
            for s in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        found = [v for n, ls, v in self.samples() if n == name and _match(ls, labels)]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def total(self, name: str, predicate: Callable[[dict[str, str]], bool]) -> float:
        return sum(v for n, ls, v in self.samples() if n == name and predicate(ls))


def _match(labels: Labels, wanted: Labels) -> bool:
    return all(labels.get(k) == v for k, v in wanted.items())
