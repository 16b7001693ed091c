"""pytest plugin that runs a library's *own* test suite with a poolmon shim on (or off).

Loaded into the upstream suite's pytest process with ``-p poolmon_plugin`` (this directory on
``PYTHONPATH``; it is imported as a top-level module because both redis-py's ``tests`` and
urllib3's ``test`` packages would shadow a ``tests.upstream`` import)::

    python -m pytest <upstream files> -p poolmon_plugin \\
        --poolmon-shim redis --poolmon-mode on --poolmon-report report.json

``--poolmon-mode on`` calls ``poolmon.instrument(<shim>)`` against a fresh default registry before
any test runs and counts every event the shim records. ``off`` (the baseline) never imports
poolmon at all, so the baseline really is the library alone. In both modes the outcome of every
test (``passed``, ``failed``, ``error``, ``skipped``, ``xfailed``, ``xpassed``) and the ids
deselected on the command line are written to the JSON report for the runner to compare.

With instrumentation on, the session fails unless the shim was active from start to end and
recorded borrows: a run that silently left the library uninstrumented proves nothing.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "REPORT_VERSION",
    "pytest_addoption",
    "pytest_configure",
    "pytest_deselected",
    "pytest_runtest_logreport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
]

#: Bumped when the report's shape changes (the runner checks it).
REPORT_VERSION = 1

_SHIMS = ("redis", "urllib3", "sqlalchemy", "asyncpg", "httpx", "aiohttp")


class _Recorder:
    """What one session saw: per-test outcomes and, with poolmon on, the shim's events."""

    def __init__(self, shim: str, mode: str, report: str | None) -> None:
        self.shim = shim
        self.mode = mode
        self.report = report
        self.outcomes: dict[str, str] = {}
        self.deselected: list[str] = []
        # Subscribers run on whichever thread recorded the event (tests use threads and forks);
        # the lock keeps the counts exact rather than "mostly right".
        self._lock = threading.Lock()
        self.events: Counter[str] = Counter()
        self.pools: set[str] = set()
        self.active_at_start = False
        self.registry: Any = None

    def on_event(self, event: Any) -> None:
        with self._lock:
            self.events[event.kind] += 1
            self.pools.add(event.pool)

    def record(self, report: pytest.TestReport) -> None:
        outcome = _outcome(report)
        if outcome is None:
            return
        previous = self.outcomes.get(report.nodeid)
        # A test's worst phase decides: a passing call followed by a failing teardown is an error.
        if previous is None or _RANK[outcome] > _RANK[previous]:
            self.outcomes[report.nodeid] = outcome


#: Severity order used to fold the setup/call/teardown phases into one outcome per test.
_RANK = {"passed": 0, "skipped": 1, "xfailed": 2, "xpassed": 3, "failed": 4, "error": 5}


def _outcome(report: pytest.TestReport) -> str | None:
    wasxfail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "xfailed" if wasxfail else "skipped"
    if report.when == "call":
        return "xpassed" if wasxfail else "passed"
    return None  # a passing setup or teardown says nothing on its own


_KEY = pytest.StashKey[_Recorder]()
# pytest_runtest_logreport receives no config; the one recorder of this process is kept here.
_current: _Recorder | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("poolmon", "run this suite with a poolmon shim on")
    group.addoption("--poolmon-shim", choices=_SHIMS, help="the shim to turn on")
    group.addoption(
        "--poolmon-mode",
        choices=("on", "off"),
        default="on",
        help="on: instrument; off: baseline, poolmon is not even imported",
    )
    group.addoption("--poolmon-report", default=None, help="write outcomes and counts here (JSON)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    shim = config.getoption("--poolmon-shim")
    if shim is None:
        raise pytest.UsageError(
            "poolmon_plugin needs --poolmon-shim (one of " + ", ".join(_SHIMS) + ")"
        )
    recorder = _Recorder(
        shim, config.getoption("--poolmon-mode"), config.getoption("--poolmon-report")
    )
    config.stash[_KEY] = recorder
    global _current
    _current = recorder
    if recorder.mode == "off":
        return
    import poolmon
    from poolmon.core.registry import PoolRegistry, set_default_registry

    # A registry of our own, so the counts are this session's and nothing else's.
    recorder.registry = PoolRegistry()
    set_default_registry(recorder.registry)
    recorder.registry.subscribe(recorder.on_event)
    poolmon.instrument(shim)
    recorder.active_at_start = shim in poolmon.shims.instrumented()


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        recorder = items[0].config.stash.get(_KEY, None)
        if recorder is not None:
            recorder.deselected.extend(item.nodeid for item in items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    recorder = _current
    if recorder is not None:
        recorder.record(report)


def _problems(recorder: _Recorder, *, active_at_end: bool) -> list[str]:
    """Why an instrumented session does not prove anything (empty when it does)."""
    if recorder.mode == "off":
        return []
    out = []
    if not recorder.active_at_start:
        out.append(f"poolmon.instrument({recorder.shim!r}) did not activate the shim")
    if not active_at_end:
        out.append("the shim was no longer active at the end of the session")
    if recorder.events["borrow"] == 0:
        out.append("the shim recorded no borrow: instrumentation was not on")
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    recorder = session.config.stash.get(_KEY, None)
    if recorder is None:
        return
    active_at_end = False
    self_metrics: dict[str, dict[str, int]] = {}
    if recorder.mode == "on":
        import poolmon

        active_at_end = recorder.shim in poolmon.shims.instrumented()
        snap = recorder.registry.self_metrics.snapshot()
        self_metrics = {name: dict(values) for name, values in snap.items()}
    problems = _problems(recorder, active_at_end=active_at_end)
    if problems and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if recorder.report is None:
        return
    with recorder._lock:
        events = dict(recorder.events)
        pools = sorted(recorder.pools)
    payload = {
        "version": REPORT_VERSION,
        "shim": recorder.shim,
        "mode": recorder.mode,
        "python": sys.version.split()[0],
        "exitstatus": int(session.exitstatus),
        "outcomes": recorder.outcomes,
        "deselected": sorted(recorder.deselected),
        "events": events,
        "pools": pools,
        "self_metrics": self_metrics,
        "problems": problems,
        "poolmon_imported": "poolmon" in sys.modules,
    }
    path = Path(recorder.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    recorder = config.stash.get(_KEY, None)
    if recorder is None:
        return
    if recorder.mode == "off":
        terminalreporter.write_line(f"poolmon: baseline run, {recorder.shim} not instrumented")
        return
    with recorder._lock:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(recorder.events.items()))
        npools = len(recorder.pools)
    terminalreporter.write_line(f"poolmon: {recorder.shim} instrumented; {npools} pools; {counts}")
