"""``poolmon doctor``'s findings for ``top``'s rows, from the model's recent window.

Pure data: the model's per-pool window in, findings by ``(source, pool)`` out; the view draws
them. ``top`` reads fewer series than ``doctor`` (no use-time or create-time histograms), so the
rules that need them stay silent here or fall back (sizes without Little's law); ``poolmon
doctor`` has the full set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from poolmon.doctor import Finding, PoolWindow, Thresholds, diagnose_windows
from poolmon.doctor.model import Borrow
from poolmon.top.model import PoolRow, TopModel

__all__ = ["Findings", "findings_for"]

Findings = Mapping[tuple[str, str], tuple[Finding, ...]]


def findings_for(
    model: TopModel,
    rows: Sequence[PoolRow],
    thresholds: Thresholds | None = None,
    borrows: Mapping[tuple[str, str], tuple[Borrow, ...]] | None = None,
) -> Findings:
    """Findings by ``(source, pool)``; ``borrows`` (from ``/poolmon/snapshot.json``) add the
    borrow site to leak findings."""
    known = borrows or {}
    windows = []
    for source, last, first, seconds, peak in model.windows(r.key for r in rows):
        described = f"last {seconds:.0f}s in top" if first is not None else "since the pool started"
        windows.append(
            PoolWindow(
                source=source,
                last=last,
                first=first,
                seconds=seconds if first is not None else None,
                window=described,
                peak_used=peak,
                borrows=known.get((source, last.name)),
            )
        )
    out: dict[tuple[str, str], list[Finding]] = {}
    for finding in diagnose_windows(windows, thresholds=thresholds).findings:
        if finding.pool is not None and finding.source is not None:
            out.setdefault((finding.source, finding.pool), []).append(finding)
    return {k: tuple(v) for k, v in out.items()}
