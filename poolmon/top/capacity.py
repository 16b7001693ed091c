"""The capacity chain of each backend: app pools -> proxy pools -> the backend's own count.

``orders-db: 3 instances x 20 max = 60 -> pgbouncer 20 server conns -> postgres 23/100``

Built from what a source exposes (spec section 12): application pools (``pool_info`` with
``server.address``/``server.port``), proxy pools (``pool.system`` ``pgbouncer``, listening at
the address the application pools connect to; ``pool_proxy_info`` names the backend they forward
to) and backends (``backend_connection_usage`` / ``_limit`` / ``_reserved``, ``backend_up``).
Pure data: :mod:`poolmon.top.view` renders it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from poolmon.core.catalog import BACKEND_METRICS, PROXY_METRICS
from poolmon.top.exposition import ExpositionParser, Triple

__all__ = [
    "BACKEND_SERIES",
    "BackendSample",
    "CapacityLine",
    "ProxyLink",
    "capacity_lines",
    "read_backend_series",
]

_UP: Final = BACKEND_METRICS["backend.up"].prometheus
_USAGE: Final = BACKEND_METRICS["backend.connection.usage"].prometheus
_LIMIT: Final = BACKEND_METRICS["backend.connection.limit"].prometheus
_RESERVED: Final = BACKEND_METRICS["backend.connection.reserved"].prometheus
_PROXY_INFO: Final = PROXY_METRICS["pool.proxy.info"].prometheus
#: The series ``top`` reads for the chain (besides the pool ones it reads anyway).
BACKEND_SERIES: Final = (_UP, _USAGE, _LIMIT, _RESERVED, _PROXY_INFO)
_SHORT: Final[Mapping[str, str]] = {"postgresql": "postgres"}


@dataclass(frozen=True, slots=True)
class BackendSample:
    """A backend's own view: its connections now and its limit (None: not reported)."""

    name: str
    system: str
    up: bool
    used: float | None = None
    limit: float | None = None
    reserved: float | None = None


@dataclass(frozen=True, slots=True)
class ProxyLink:
    """A proxy pool and the backend it forwards to."""

    pool: str
    backend: str


def read_backend_series(
    text: str, parser: ExpositionParser | None = None
) -> tuple[tuple[BackendSample, ...], tuple[ProxyLink, ...]]:
    """Backends and proxy links of an exposition; nothing (and near no cost) on a page without."""
    if "backend_" not in text and _PROXY_INFO not in text:
        return (), ()
    return from_triples((parser or ExpositionParser(BACKEND_SERIES)).parse(text))


def from_triples(
    triples: Iterable[Triple],
) -> tuple[tuple[BackendSample, ...], tuple[ProxyLink, ...]]:
    fields: dict[str, dict[str, Any]] = {}
    links: list[ProxyLink] = []
    for name, labels, value in triples:
        if name == _PROXY_INFO:
            if labels.get("backend_name") and labels.get("pool_name"):
                links.append(ProxyLink(labels["pool_name"], labels["backend_name"]))
            continue
        backend = labels.get("backend_name")
        if not backend or name not in BACKEND_SERIES:
            continue
        entry = fields.setdefault(backend, {"system": labels.get("backend_system", "")})
        if name == _UP:
            entry["up"] = value >= 1
        elif name == _USAGE:
            entry["used"] = entry.get("used", 0.0) + value
        elif name == _LIMIT:
            entry["limit"] = value
        elif name == _RESERVED:
            entry["reserved"] = value
    samples = tuple(
        BackendSample(
            name=name,
            system=str(f["system"]),
            up=bool(f.get("up", "used" in f)),
            used=f.get("used"),
            limit=f.get("limit"),
            reserved=f.get("reserved"),
        )
        for name, f in sorted(fields.items())
    )
    return samples, tuple(links)


@dataclass(frozen=True, slots=True)
class CapacityLine:
    """One backend's chain, as numbers and as the one line ``top`` prints."""

    label: str
    system: str
    instances: int
    per_instance_max: float | None  # None: the instances differ (or a pool has no max)
    app_max: float | None
    app_used: float
    proxy: str | None
    proxy_server: float | None
    backend: str
    backend_up: bool | None  # None: nobody polls this backend
    backend_used: float | None
    backend_limit: float | None

    @property
    def text(self) -> str:
        if self.instances == 0:  # a backend no application pool of these sources talks to
            if not self.backend_up:
                return f"{self.backend}: down"
            limit = "?" if self.backend_limit is None else _n(self.backend_limit)
            return f"{self.backend}: {_n(self.backend_used or 0.0)}/{limit} connections"
        count = f"{self.instances} instance{'' if self.instances == 1 else 's'}"
        if self.app_max is None:
            app = f"{count}, no max"
        elif self.per_instance_max is not None:
            app = f"{count} x {_n(self.per_instance_max)} max = {_n(self.app_max)}"
        else:
            app = f"{count}, {_n(self.app_max)} max"
        parts = [f"{self.label}: {app}"]
        if self.proxy is not None:
            parts.append(f"pgbouncer {_n(self.proxy_server or 0.0)} server conns")
        word = _SHORT.get(self.system, self.system)
        if self.backend_up is None:
            parts.append(f"{self.backend} (not polled)")
        elif not self.backend_up:
            parts.append(f"{word} down")
        else:
            limit = "?" if self.backend_limit is None else _n(self.backend_limit)
            parts.append(f"{word} {_n(self.backend_used or 0.0)}/{limit}")
        return " -> ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["text"] = self.text
        return out


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def capacity_lines(
    rows: Sequence[Any], backends: Iterable[BackendSample], links: Iterable[ProxyLink]
) -> tuple[CapacityLine, ...]:
    """One line per backend that application pools talk to (directly or through a proxy), then
    one per polled backend none of them does (its count against its limit, or down)."""
    by_backend = {b.name: b for b in backends}
    if not by_backend and not any(r.system == "pgbouncer" for r in rows):
        return ()
    upstream = {link.pool: link.backend for link in links}
    proxies: dict[str, list[Any]] = {}
    groups: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        if row.system == "pgbouncer":
            proxies.setdefault(row.backend, []).append(row)
        elif row.backend != "-":
            groups.setdefault((row.system, row.backend), []).append(row)
    out = []
    for (system, address), members in sorted(groups.items()):
        per_instance: dict[tuple[str, str | None], float | None] = {}
        for r in members:
            key = (r.source, r.pid)
            prev = per_instance.get(key, 0.0)
            per_instance[key] = None if prev is None or r.max is None else prev + r.max
        maxes = set(per_instance.values())
        app_max = None if None in maxes else sum(v or 0.0 for v in per_instance.values())
        proxy_rows = proxies.get(address)
        backend = f"{system}://{address}"
        proxy_server = None
        if proxy_rows:
            proxy_server = sum(r.used + r.idle for r in proxy_rows)
            targets = sorted({upstream[r.name] for r in proxy_rows if r.name in upstream})
            if targets:
                backend = targets[0]
        sample = by_backend.get(backend)
        names = {r.name for r in members}
        out.append(
            CapacityLine(
                label=names.pop() if len(names) == 1 else address,
                system=sample.system if sample and sample.system else system,
                instances=len(per_instance),
                per_instance_max=maxes.pop() if len(maxes) == 1 and app_max is not None else None,
                app_max=app_max,
                app_used=sum(r.used for r in members),
                proxy=f"pgbouncer://{address}" if proxy_rows else None,
                proxy_server=proxy_server,
                backend=backend,
                backend_up=None if sample is None else sample.up,
                backend_used=None if sample is None else sample.used,
                backend_limit=None if sample is None else sample.limit,
            )
        )
    referenced = {line.backend for line in out}
    for sample in by_backend.values():
        if sample.name not in referenced:
            out.append(
                CapacityLine(
                    label=sample.name, system=sample.system, instances=0, per_instance_max=None,
                    app_max=None, app_used=0.0, proxy=None, proxy_server=None,
                    backend=sample.name, backend_up=sample.up, backend_used=sample.used,
                    backend_limit=sample.limit,
                )
            )  # fmt: skip
    return tuple(out)
