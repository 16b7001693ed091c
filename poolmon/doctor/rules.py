"""The findings: one function per problem, pure (windows and thresholds in, findings out).

Per-pool rules take a :class:`PoolWindow`; fleet rules (storm, over-commit) take every window
talking to one backend. Each states the numbers it used in ``evidence`` and the window they
cover, so a reader can check the arithmetic. Sizing follows the seeds: wait time first;
saturation near 1 with waits means too small, and Little's law (concurrent demand = borrow rate x
mean time in the pool, use plus wait) gives the size, with headroom, capped by the pool's share
of the backend limit, ``floor(limit x backend_share / pools)``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from poolmon.doctor.advice import Terms, terms_for
from poolmon.doctor.model import BackendLimit, Finding, PoolWindow
from poolmon.doctor.thresholds import Thresholds
from poolmon.top.model import quantile_from_cumulative
from poolmon.top.samples import CREATE_BOUNDS, WAIT_BOUNDS

__all__ = [
    "FLEET_RULES",
    "KINDS",
    "POOL_RULES",
    "RUNBOOKS",
    "Context",
    "backend_key",
    "borrow_site",
]

#: Finding kind -> its section of dashboards/runbooks.md.
RUNBOOKS: Final[Mapping[str, str]] = {
    "undersized": "PoolNearSaturation",
    "oversized": "PoolOversized",
    "storm": "PoolConnectionStorm",
    "churn": "PoolConnectionChurn",
    "leak": "PoolConnectionLeakSuspected",
    "slow_connect": "PoolSlowConnect",
    "silent_breakage": "PoolSilentBreakage",
    "refusals": "PoolAcquireTimeouts",
    "overcommit": "PoolFleetOverCommit",
}
KINDS: Final[tuple[str, ...]] = tuple(RUNBOOKS)
_RUNBOOK_FILE: Final = "dashboards/runbooks.md#"


def backend_key(system: str, backend: str) -> tuple[str, str]:
    """``(system, host:port)`` with ``localhost`` spelt as the loopback address."""
    host, sep, port = backend.rpartition(":")
    if not sep:
        host, port = backend, ""
    if host in ("localhost", "::1", "[::1]"):
        host = "127.0.0.1"
    system = {"postgres": "postgresql", "pg": "postgresql"}.get(system, system)
    return system, f"{host}:{port}" if port else host


@dataclass(frozen=True, slots=True)
class Context:
    """What a per-pool rule may know about the fleet: limits and pools per backend."""

    limits: Mapping[str, BackendLimit] = field(default_factory=dict)  # by host:port
    pools_per_backend: Mapping[tuple[str, str], int] = field(default_factory=dict)
    open_per_backend: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def limit_for(self, w: PoolWindow) -> BackendLimit | None:
        return self.limits.get(backend_key(w.last.system, w.last.backend)[1])

    def share(self, w: PoolWindow, t: Thresholds) -> int | None:
        """This pool's share of its backend's limit, or None when the limit is unknown."""
        key = backend_key(w.last.system, w.last.backend)
        limit = self.limits.get(key[1])
        if limit is None:
            return None
        return math.floor(
            limit.limit * t.backend_share / max(1, self.pools_per_backend.get(key, 1))
        )


def _finding(
    kind: str,
    severity: str,
    w: PoolWindow,
    summary: str,
    evidence: Mapping[str, object],
    advice: str,
) -> Finding:
    return Finding(
        kind=kind,
        severity=severity,
        pool=w.name,
        source=w.source,
        backend=w.last.backend,
        summary=summary,
        evidence=dict(evidence),
        window=w.window,
        advice=advice,
        runbook=_RUNBOOK_FILE + RUNBOOKS[kind].lower(),
    )


def _count_above(cumulative: Sequence[float], bounds: Sequence[float], limit: float) -> float:
    """Observations above ``limit`` (read at the largest bound <= limit)."""
    if not cumulative:
        return 0.0
    below = 0.0
    for bound, count in zip(bounds, cumulative, strict=False):
        if bound > limit:
            break
        below = count
    return cumulative[-1] - below


def _borrows(w: PoolWindow) -> float:
    hist = w.delta_hist("wait_cumulative")
    return hist[-1] if hist else 0.0


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


# ----------------------------------------------------------------------------- per pool


def undersized(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    size = w.last.max
    if not size:
        return None
    hist = w.delta_hist("wait_cumulative")
    borrows = hist[-1] if hist else 0.0
    # A lazy create makes its borrower wait for the connect: one wait per create is not queueing.
    waited = max(0.0, _count_above(hist, WAIT_BOUNDS, t.wait_threshold) - w.delta("creates"))
    timeouts = w.delta("timeouts")
    saturation = w.peak / size
    if saturation < t.saturation:
        return None
    waits_matter = waited >= 1 and waited / max(borrows, 1.0) >= t.wait_fraction
    if not (waits_matter or timeouts > 0):
        return None
    p95 = quantile_from_cumulative(WAIT_BOUNDS, hist, 0.95)
    terms = terms_for(w.last)
    evidence: dict[str, object] = {
        "max": size,
        "peak_used": w.peak,
        "saturation": saturation,
        "borrows": borrows,
        "waited": waited,
        "wait_p95_s": p95,
        "timeouts": timeouts,
    }
    uses = w.delta("use_count")
    use_sum, wait_sum = w.delta("use_sum"), w.delta("wait_sum")
    if w.seconds and w.seconds > 0 and uses:
        rate = borrows / w.seconds
        mean_use = use_sum / uses
        mean_wait = wait_sum / max(borrows, 1.0)
        demand = rate * (mean_use + mean_wait)  # Little's law: callers wanting a connection
        advised = math.ceil(demand * t.headroom)
        how = (
            f"Little's law: {rate:.1f} borrows/s x ({_fmt(mean_use)} use + {_fmt(mean_wait)} wait)"
            f" = {demand:.1f} concurrent callers, x{t.headroom:g} headroom"
        )
        evidence |= {"borrow_rate_per_s": rate, "mean_use_s": mean_use, "demand": demand}
    else:
        advised = math.ceil(max(size + w.last.pending, size * t.headroom))
        how = f"no time window to apply Little's law: max x{t.headroom:g} headroom"
    advised = max(advised, int(size) + 1)
    cap = ctx.share(w, t)
    if cap is not None:
        evidence["backend_share"] = cap
        if advised > cap:
            how += f"; capped at this pool's share of the backend limit ({cap})"
            advised = cap
    if advised <= size:
        advice = (
            f"the backend limit leaves this pool no more than {cap} connections: shorten the "
            "time each borrow holds a connection, or put a proxy (PgBouncer) in front"
        )
    else:
        advice = (
            f"{terms.label}: {terms.size.format(n=int(size))} -> "
            f"{terms.size.format(n=advised)} ({how})"
        )
    severe = timeouts > 0 or (p95 is not None and p95 >= t.wait_p95_critical)
    summary = (
        f"pool is full: peak {w.peak:g} of {size:g} used, {waited:g} of {borrows:g} borrows waited"
        f" (p95 {_fmt(p95)}), {timeouts:g} timed out"
    )
    return _finding("undersized", "critical" if severe else "warning", w, summary, evidence, advice)


def oversized(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    size = w.last.max
    if not size or size < t.oversized_min_max:
        return None
    borrows = _borrows(w)
    if borrows < t.min_borrows or w.peak > size * t.oversized_peak:
        return None
    held = w.peak_open if w.peak_open is not None else w.last.idle + w.last.used
    unneeded = held - w.peak
    limit = ctx.limit_for(w)
    key = backend_key(w.last.system, w.last.backend)
    near = False
    if limit is not None:
        near = ctx.open_per_backend.get(key, 0.0) >= limit.limit * t.backend_share
    if not (near or (unneeded >= 2 and unneeded >= w.peak)):
        return None
    terms = terms_for(w.last)
    advised = max(1, math.ceil(w.peak * t.headroom))
    evidence = {
        "max": size,
        "peak_used": w.peak,
        "open": held,
        "never_needed": unneeded,
        "borrows": borrows,
    }
    summary = (
        f"peak {w.peak:g} of {size:g} used over {borrows:g} borrows; "
        f"{unneeded:g} open connections never needed"
    )
    if near and limit is not None:
        evidence["backend_limit"] = limit.limit
        summary += f"; the backend is near its limit of {limit.limit}"
    advice = f"{terms.label}: {terms.size.format(n=int(size))} -> {terms.size.format(n=advised)}"
    if w.last.min and w.last.min > w.peak:
        advice += f"; and {terms.min_size} (min {w.last.min:g} keeps idle connections open)"
    return _finding("oversized", "warning" if near else "info", w, summary, evidence, advice)


def churn(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    borrows = _borrows(w)
    if borrows < t.min_borrows:
        return None
    creates = w.delta("creates")
    replaced = w.delta_keyed("evictions", "broken") + w.delta_keyed(
        "evictions", "failed_validation"
    )
    # A window from the start includes the first fill (up to the peak, or min_size).
    fill = max(w.peak, w.last.min or 0.0) if w.first is None else 0.0
    churned = max(0.0, creates - replaced - fill)
    overflow = w.delta_keyed("evictions", "overflow")
    idle_closed = w.delta_keyed("evictions", "idle_timeout")
    returns = w.delta("use_count") or borrows
    terms = terms_for(w.last)
    evidence = {
        "borrows": borrows,
        "creates": creates,
        "creates_per_borrow": churned / borrows,
        "overflow_discards": overflow,
        "idle_timeout_evictions": idle_closed,
    }
    if returns and overflow / returns >= t.overflow_fraction:
        callers = max(math.ceil(w.peak), int(w.last.max or 0) + 1, 2)
        size = int(w.last.max or 0)
        summary = (
            f"{overflow:g} of {returns:g} returns found the pool full and were discarded "
            f"({creates:g} creates for {borrows:g} borrows): {callers} concurrent callers"
        )
        current = terms.size.format(n=size) if size else "the pool"
        advice = (
            f"{terms.label}: {current} keeps fewer connections than the {callers} concurrent "
            f"callers: {terms.size.format(n=callers)}"
        )
        return _finding("churn", "warning", w, summary, evidence, advice)
    if churned / borrows < t.churn_ratio:
        return None
    if idle_closed >= 0.5 * churned:
        summary = (
            f"{creates:g} creates for {borrows:g} borrows, "
            f"{idle_closed:g} closed by the idle timeout"
        )
        advice = (
            f"{terms.label}: the idle timeout is shorter than the gap between uses: raise "
            f"{terms.idle.format(s='...')}"
        )
    else:
        summary = f"{creates:g} creates for {borrows:g} borrows: connections are not reused"
        advice = f"{terms.label}: {terms.no_reuse}"
    return _finding("churn", "warning", w, summary, evidence, advice)


def borrow_site(stack: str | None) -> str | None:
    """``file:line in function`` of the innermost frame outside poolmon and the stdlib."""
    if not stack:
        return None
    site = None
    lines = stack.splitlines()
    for line in lines:
        text = line.strip()
        if not text.startswith('File "'):
            continue
        path = text[6 : text.find('"', 6)]
        if "/poolmon/" in path and "/tests/" not in path and "/scripts/" not in path:
            continue
        if "/lib/python" in path and "site-packages" not in path:
            continue  # contextlib, threading: not where the borrow was written
        rest = text[text.find('"', 6) + 1 :]
        site = path + rest.replace(", line ", ":").replace(", in ", " in ")
    return site


def leak(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    suspected = w.delta_keyed("errors", "leak_suspected")
    reclaimed = w.delta_keyed("evictions", "leaked")
    old = [b for b in (w.borrows or ()) if b.age >= t.leak_age]
    oldest = max([w.last.oldest_use, *(b.age for b in old)])
    if oldest < t.leak_age and not old and not suspected and not reclaimed:
        return None
    stacks = [b.stack for b in old] + list(w.leak_stacks)
    sites = Counter(s for s in map(borrow_site, stacks) if s)
    terms = terms_for(w.last)
    evidence: dict[str, object] = {
        "oldest_use_s": oldest,
        "outstanding_over_threshold": len(old) if w.borrows is not None else None,
        "leak_suspected_errors": suspected,
        "reclaimed": reclaimed,
        "used": w.last.used,
        "max": w.last.max,
    }
    if oldest >= t.leak_age:
        summary = (
            f"a borrow has been outstanding for {_fmt(oldest)} (leak threshold {t.leak_age:g}s)"
        )
    else:
        summary = (
            f"{suspected:g} borrows were reported as leaks and {reclaimed:g} reclaimed by the "
            "pool in the window"
        )
    if sites:
        site, count = sites.most_common(1)[0]
        evidence["borrow_site"] = site
        summary += f"; borrowed at {site}" + (f" ({count} borrows)" if count > 1 else "")
        advice = f"{terms.label}: return the connection borrowed at {site}: {terms.leak}"
    else:
        advice = f"{terms.label}: {terms.leak}; sample borrow stacks to see where"
        if w.borrows is None:
            advice += " (serve /poolmon/snapshot.json beside /metrics)"
    starved = bool(w.last.max) and w.last.used >= (w.last.max or 0) and oldest >= t.leak_age
    return _finding("leak", "critical" if starved else "warning", w, summary, evidence, advice)


def slow_connect(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    creates = w.delta("creates")
    borrows = _borrows(w)
    if creates < 3 or borrows < t.min_borrows:
        return None
    hist = w.delta_hist("create_cumulative")
    p95 = quantile_from_cumulative(CREATE_BOUNDS, hist, 0.95) if hist else None
    if p95 is None or p95 < t.slow_connect_p95:
        return None
    create_s, use_s = w.delta("create_sum"), w.delta("use_sum")
    share = create_s / (create_s + use_s) if create_s + use_s > 0 else 0.0
    uses = w.delta("use_count")
    mean_use = use_s / uses if uses else 0.0
    if share < t.slow_connect_share or p95 < t.slow_connect_ratio * mean_use:
        return None
    terms = terms_for(w.last)
    keep = max(1, math.ceil(w.peak))
    summary = (
        f"{creates:g} connects with p95 {_fmt(p95)}: {share:.0%} of the time in connections "
        "was spent opening them"
    )
    evidence = {
        "creates": creates,
        "borrows": borrows,
        "create_p95_s": p95,
        "mean_use_s": mean_use,
        "create_s": create_s,
        "use_s": use_s,
        "share": share,
    }
    advice = f"{terms.label}: keep {keep} warm: {terms.warm.format(n=keep)}"
    return _finding("slow_connect", "warning", w, summary, evidence, advice)


def silent_breakage(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    broken = w.delta_keyed("evictions", "broken")
    failed = w.delta_keyed("evictions", "failed_validation")
    if broken + failed < t.breakage_evictions:
        return None
    terms = terms_for(w.last)
    after_quiet = [b for b in w.breakages if b.quiet >= t.idle_gap]
    evidence: dict[str, object] = {"broken": broken, "failed_validation": failed}
    summary = (
        f"{broken + failed:g} connections found dead "
        f"({broken:g} broken, {failed:g} failed validation)"
    )
    if after_quiet:
        quiet = min(b.quiet for b in after_quiet)
        evidence |= {"after_quiet": len(after_quiet), "shortest_quiet_s": quiet}
        summary += f", {len(after_quiet)} of them after >= {_fmt(quiet)} without a borrow"
        keep = max(1, math.floor(quiet * 0.8))
        advice = (
            f"{terms.label}: something closes idle connections after about {_fmt(quiet)}: "
            f"{terms.idle.format(s=keep)} or {terms.lifetime.format(s=keep)} below it, or "
            f"{terms.validate.format(s=keep)}"
        )
    else:
        advice = (
            f"{terms.label}: set {terms.lifetime.format(s='...')} below the upstream idle kill, "
            f"or {terms.validate.format(s=1)}"
        )
    return _finding("silent_breakage", "warning", w, summary, evidence, advice)


def refusals(w: PoolWindow, t: Thresholds, ctx: Context) -> Finding | None:
    timeouts = w.delta("timeouts")
    exhausted = w.delta_keyed("errors", "exhausted")
    failed = timeouts + exhausted
    if failed <= 0:
        return None
    attempts = _borrows(w) + failed
    share = failed / attempts
    if share <= t.refusal_fraction:
        return None
    terms = terms_for(w.last)
    size = int(w.last.max or 0)
    evidence = {"timeouts": timeouts, "refused": exhausted, "attempts": attempts, "share": share}
    parts = []
    if exhausted:
        parts.append(f"{exhausted:g} refused at once (fail-fast or max_waiting)")
    if timeouts:
        parts.append(f"{timeouts:g} timed out waiting, each after the full borrow timeout")
    summary = f"{share:.1%} of {attempts:g} borrow attempts failed: " + ", ".join(parts)
    advice = f"{terms.label}: every failure is an error returned to a caller; "
    advice += (
        f"raise {terms.size.format(n=size)} -> {terms.size.format(n=size * 2 if size else 2)} "
        f"where the backend allows, or queue briefly ({terms.timeout})"
    )
    severity = "critical" if share >= t.refusal_critical else "warning"
    return _finding("refusals", severity, w, summary, evidence, advice)


PoolRule = Callable[[PoolWindow, Thresholds, Context], Finding | None]
#: Per-pool rules, in the order their findings are listed within a severity.
POOL_RULES: Final[tuple[PoolRule, ...]] = (
    undersized,
    oversized,
    churn,
    leak,
    slow_connect,
    silent_breakage,
    refusals,
)


# ----------------------------------------------------------------------------- fleet


def _fleet_finding(
    kind: str,
    severity: str,
    backend: str,
    summary: str,
    evidence: Mapping[str, object],
    advice: str,
    window: str,
) -> Finding:
    return Finding(
        kind=kind,
        severity=severity,
        pool=None,
        source=None,
        backend=backend,
        summary=summary,
        evidence=dict(evidence),
        window=window,
        advice=advice,
        runbook=_RUNBOOK_FILE + RUNBOOKS[kind].lower(),
    )


def storm(
    key: tuple[str, str], windows: Sequence[PoolWindow], t: Thresholds, ctx: Context
) -> Finding | None:
    times = sorted(x for w in windows for x in w.create_times)
    if len(times) < t.storm_creates:
        return None
    start = times[0]
    burst = [x for x in times if x - start <= t.storm_window]
    if len(burst) < t.storm_creates:
        return None
    pools = [w for w in windows if w.create_times and w.create_times[0] - start <= t.storm_window]
    instances = len({(w.source, w.last.pid) for w in pools})
    terms: Terms = terms_for(pools[0].last if pools else windows[0].last)
    span = burst[-1] - start
    summary = (
        f"{len(burst)} connections opened to {key[1]} within {span:.2f}s of the first, "
        f"by {len(pools)} pools in {instances} instances"
    )
    evidence = {"creates": len(burst), "seconds": span, "pools": len(pools), "instances": instances}
    advice = f"{terms.label}: start lazily and spread the warm-up: {terms.lazy}; {terms.min_size}"
    return _fleet_finding(
        "storm",
        "warning",
        key[1],
        summary,
        evidence,
        advice,
        f"first {t.storm_window:g}s of events",
    )


def overcommit(
    key: tuple[str, str], windows: Sequence[PoolWindow], t: Thresholds, ctx: Context
) -> Finding | None:
    limit = ctx.limits.get(key[1])
    if limit is None or any(not w.last.max for w in windows):
        return None
    total = sum(float(w.last.max or 0) for w in windows)
    safe = limit.limit * t.backend_share
    if total <= safe:
        return None
    pools = len(windows)
    instances = len({(w.source, w.last.pid) for w in windows})
    per = math.floor(safe / pools)
    terms = terms_for(windows[0].last)
    summary = (
        f"{pools} pools in {instances} instances may open {total:g} connections to {key[1]}, "
        f"which accepts {limit.limit} ({limit.origin})"
    )
    evidence = {
        "sum_max": total,
        "limit": limit.limit,
        "pools": pools,
        "instances": instances,
        "per_pool_max": per,
    }
    advice = (
        f"{terms.label}: "
        f"per pool max = floor({limit.limit} x {t.backend_share:g} / {pools}) = {per}: "
        f"{terms.size.format(n=per)}"
        + ("" if per >= 1 else "; or put a proxy (PgBouncer) in front")
    )
    severity = "critical" if total > limit.limit else "warning"
    return _fleet_finding(
        "overcommit", severity, key[1], summary, evidence, advice, "current max of each pool"
    )


FleetRule = Callable[[tuple[str, str], Sequence[PoolWindow], Thresholds, Context], Finding | None]
FLEET_RULES: Final[tuple[FleetRule, ...]] = (storm, overcommit)
