"""``diagnose()``: sources in, a :class:`Report` of findings out.

It gathers :class:`PoolWindow` records from every source (:mod:`poolmon.doctor.inputs`), reads
backend limits (:mod:`poolmon.doctor.backend`), runs the per-pool and fleet rules
(:mod:`poolmon.doctor.rules`) and sorts the findings, most severe first. A source or backend
that cannot be read is a problem in the report, never an exception: the others are still
diagnosed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.doctor.backend import BackendError, parse_limit, read_limit
from poolmon.doctor.inputs import (
    Collected,
    from_jsonl,
    from_metrics_url,
    from_prometheus,
    from_registry,
)
from poolmon.doctor.model import (
    BackendLimit,
    Finding,
    PoolWindow,
    Report,
    SourceProblem,
    sort_findings,
)
from poolmon.doctor.rules import FLEET_RULES, POOL_RULES, Context, backend_key
from poolmon.doctor.thresholds import Thresholds

__all__ = ["diagnose", "diagnose_windows"]


def diagnose(
    registry: PoolRegistry | None = None,
    *,
    urls: Sequence[str] = (),
    prometheus: Sequence[str] = (),
    jsonl: Sequence[str | Path] = (),
    window: float = 3600.0,
    end: float | None = None,
    backends: Sequence[str] = (),
    limits: Iterable[str | BackendLimit] = (),
    thresholds: Thresholds | None = None,
    timeout: float = 5.0,
) -> Report:
    """Diagnose ``registry`` (default: the default registry, when no other source is given),
    ``/metrics`` ``urls``, ``prometheus`` servers over ``window`` seconds ending at ``end``, and
    ``jsonl`` event logs. ``backends`` are DSNs/URLs whose real connection limit is read;
    ``limits`` are ``HOST:PORT=N`` strings or :class:`BackendLimit` records."""
    t = thresholds or Thresholds()
    got = Collected()
    if registry is not None or not (urls or prometheus or jsonl):
        got.extend(from_registry(registry if registry is not None else get_default_registry()))
    for url in urls:
        got.extend(from_metrics_url(url, timeout=timeout))
    for server in prometheus:
        got.extend(from_prometheus(server, window=window, end=end, timeout=max(timeout, 30.0)))
    for path in jsonl:
        got.extend(from_jsonl(path))
    for target in backends:
        try:
            got.limits.append(read_limit(target, timeout=timeout))
        except BackendError as exc:
            got.problems.append(
                SourceProblem(exc.target, down=True, message=f"backend limit not read: {exc}")
            )
    for item in limits:
        got.limits.append(parse_limit(item) if isinstance(item, str) else item)
    return diagnose_windows(
        got.windows, thresholds=t, limits=got.limits, problems=got.problems, sources=got.sources
    )


def diagnose_windows(
    windows: Sequence[PoolWindow],
    *,
    thresholds: Thresholds | None = None,
    limits: Sequence[BackendLimit] = (),
    problems: Sequence[SourceProblem] = (),
    sources: Sequence[str] = (),
) -> Report:
    """The rules over ready windows (benchmarks and tests call this directly)."""
    t = thresholds or Thresholds()
    by_backend: dict[tuple[str, str], list[PoolWindow]] = {}
    for w in windows:
        key = backend_key(w.last.system, w.last.backend)
        by_backend.setdefault(key, []).append(w)
    # Later limits win: --limit overrides what was read from a backend or from Prometheus.
    limit_map = {backend_key(lim.system, lim.backend)[1]: lim for lim in limits}
    ctx = Context(
        limits=limit_map,
        pools_per_backend={k: len(v) for k, v in by_backend.items()},
        open_per_backend={
            k: sum(w.last.idle + w.last.used for w in v) for k, v in by_backend.items()
        },
    )
    findings: list[Finding] = []
    for w in windows:
        for rule in POOL_RULES:
            found = rule(w, t, ctx)
            if found is not None:
                findings.append(found)
    for key, members in by_backend.items():
        if key[1] == "-":
            continue  # pools that did not say what they talk to: no fleet arithmetic
        for fleet_rule in FLEET_RULES:
            found = fleet_rule(key, members, t, ctx)
            if found is not None:
                findings.append(found)
    return Report(
        findings=sort_findings(findings),
        pools=len(windows),
        sources=tuple(sources),
        problems=tuple(problems),
        limits=tuple(limit_map.values()),
        thresholds=asdict(t),
    )
