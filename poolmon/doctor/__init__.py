"""``poolmon doctor``: findings and sizing advice from what the pools did (docs/doctor.md)."""

from __future__ import annotations

from poolmon.doctor.diagnose import diagnose, diagnose_windows
from poolmon.doctor.model import BackendLimit, Finding, PoolWindow, Report
from poolmon.doctor.rules import KINDS
from poolmon.doctor.thresholds import Thresholds

__all__ = [
    "KINDS",
    "BackendLimit",
    "Finding",
    "PoolWindow",
    "Report",
    "Thresholds",
    "diagnose",
    "diagnose_windows",
]
