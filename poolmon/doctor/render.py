"""Showing a :class:`Report`: rich renderables grouped by severity, and the ``--json`` text.

Pure: a report in, renderables or a string out; the console is the caller's (injectable), so
tests render through ``Console(record=True)`` and read plain text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from poolmon.doctor.model import SEVERITIES, Finding, Report

__all__ = ["MARKS", "finding_lines", "findings_marker", "report_json", "report_view"]

_STYLE: Final = {"info": "cyan", "warning": "yellow", "critical": "bold red"}
#: One character per severity for ``top``'s findings column (survives copy-paste and no colour).
MARKS: Final = {"info": "i", "warning": "!", "critical": "!!"}


def _evidence(finding: Finding) -> str:
    parts = []
    for key, value in finding.evidence.items():
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            shown = str(int(value))
        elif isinstance(value, float):
            shown = f"{value:.4g}"
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


def finding_lines(finding: Finding) -> Text:
    """One finding as a few lines of text (also used by ``top``'s detail view)."""
    text = Text()
    text.append(f"[{finding.severity}] ", style=_STYLE[finding.severity])
    text.append(finding.kind, style="bold")
    where = finding.pool if finding.pool is not None else f"backend {finding.backend}"
    text.append(f"  {where}")
    if finding.source:
        text.append(f"  ({finding.source})", style="dim")
    text.append(f"\n  {finding.summary}")
    text.append(f"\n  evidence ({finding.window}): {_evidence(finding)}", style="dim")
    text.append("\n  advice: ", style="bold")
    text.append(finding.advice)
    text.append(f"\n  runbook: {finding.runbook}", style="dim")
    return text


def findings_marker(findings: Sequence[Finding]) -> Text:
    """The worst severity among ``findings`` as a short marker ("" when none)."""
    if not findings:
        return Text("")
    worst = max(findings, key=lambda f: SEVERITIES.index(f.severity)).severity
    return Text(f"{MARKS[worst]}{len(findings)}", style=_STYLE[worst])


def report_view(report: Report) -> RenderableType:
    """The whole report: problems with sources first, then findings grouped by severity."""
    parts: list[RenderableType] = []
    head = Text(f"poolmon doctor: {report.pools} pools from {len(report.sources)} sources, ")
    head.append(f"{len(report.findings)} findings", style="bold")
    parts.append(head)
    if report.problems:
        table = Table("source", "problem", title="Sources", title_justify="left", expand=False)
        for p in report.problems:
            table.add_row(p.source, Text(p.message, style="red" if p.down else "yellow"))
        parts.append(table)
    for severity in reversed(SEVERITIES):
        group = [f for f in report.findings if f.severity == severity]
        if not group:
            continue
        body = Group(*(finding_lines(f) for f in group))
        parts.append(
            Panel(
                body,
                title=f"{severity} ({len(group)})",
                title_align="left",
                border_style=_STYLE[severity],
            )
        )
    if not report.pools:
        parts.append(Text("No pools were read.", style="yellow"))
    elif not report.findings:
        parts.append(Text("No findings: every pool is within its thresholds.", style="green"))
    return Group(*parts)


def report_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)
