"""The libraries' own pool test suites (redis-py, urllib3, SQLAlchemy, asyncpg, httpcore,
aiohttp) pass the same with poolmon's shims on as without.

For the *installed* version of each library, the sdist's tests are fetched (once, cached), run
once without poolmon (the baseline) and once with ``poolmon.instrument(<library>)`` active, each
in its own pytest process (see ``runner.py``; the selection and every left-out test's reason are
in ``suites.py``). Asserted:

* the instrumented run really was instrumented: the shim was active from start to end and
  recorded borrows, and absorbed no failure of its own (``poolmon.shim.errors``);
* the baseline never imported poolmon;
* the baseline has no failing test outside the listed deselections (an environment failure
  would otherwise hide behind "same with and without");
* every test has the same outcome in both runs, and both processes exit 0.

Needs the network (PyPI) for the first download and, for redis-py, the ``redis-server`` binary:
redis-py's suite runs FLUSHALL and DEBUG, so it gets a private server instead of the shared one.
asyncpg's harness starts its own PostgreSQL cluster from the installed server binaries
(``/usr/lib/postgresql/N/bin``), as an unprivileged user when we are root (see ``suites.py``).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import pytest

from tests.conftest import missing, require
from tests.upstream import runner
from tests.upstream.suites import SUITES, Suite

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _summary(result: runner.RunResult) -> str:
    counts: dict[str, int] = {}
    for outcome in result.outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return f"{result.mode}: exit {result.returncode}, {counts}"


@pytest.mark.parametrize("suite", SUITES, ids=[s.shim for s in SUITES])
def test_upstream_suite_same_with_and_without_poolmon(suite: Suite, tmp_path: Path) -> None:
    require(runner.installed_version(suite.distribution) is not None, suite.distribution)
    try:
        root = runner.prepare(suite)
    except runner.FetchError as exc:
        missing(f"the {suite.distribution} sdist from PyPI ({exc})")
    binary = shutil.which("redis-server") if suite.redis_server else None
    if suite.redis_server:
        require(binary is not None, "the redis-server binary (Debian package redis-server)")

    results = {}
    for mode in ("off", "on"):
        with contextlib.ExitStack() as stack:
            url = None
            if binary is not None:
                url = stack.enter_context(runner.redis_server(binary, tmp_path / f"redis-{mode}"))
            results[mode] = runner.run_suite(suite, root, mode, tmp_path, url)
    off, on = results["off"], results["on"]
    context = f"{_summary(off)}; {_summary(on)}; logs {off.log} {on.log}"

    assert off.report is not None, f"baseline wrote no report\n{off.tail()}"
    assert on.report is not None, f"instrumented run wrote no report\n{on.tail()}"
    assert on.report["problems"] == [], context
    assert on.report["events"].get("borrow", 0) > 0 and on.report["pools"], context
    assert on.report["events"].get("create", 0) > 0, context
    assert on.report["self_metrics"].get("poolmon.shim.errors") == {}, context
    assert off.report["poolmon_imported"] is False, "the baseline must run without poolmon"

    assert runner.unmatched_deselects(suite, off.report) == [], "stale entries in suites.py"
    baseline_failures = sorted(k for k, v in off.outcomes.items() if v in ("failed", "error"))
    assert baseline_failures == [], (
        "fails without poolmon too: deselect with a reason in tests/upstream/suites.py\n"
        + "\n".join(baseline_failures)
        + f"\n{off.tail()}"
    )
    differences = runner.compare(off.outcomes, on.outcomes)
    assert differences == [], "poolmon changed the outcome of:\n" + "\n".join(differences)
    assert off.returncode == 0, off.tail()
    assert on.returncode == 0, on.tail()
    assert len(on.outcomes) == len(off.outcomes) >= suite.min_tests, context


def test_compare_reports_each_changed_outcome() -> None:
    baseline = {"a": "passed", "b": "xfailed", "c": "skipped", "d": "passed"}
    instrumented = {"a": "failed", "b": "xpassed", "c": "skipped"}
    assert runner.compare(baseline, instrumented) == [
        "a: without poolmon passed, with poolmon failed",
        "d: without poolmon passed, with poolmon absent",
    ]


def test_every_deselection_has_a_reason_and_no_duplicates() -> None:
    for suite in SUITES:
        prefixes = [d.prefix for d in suite.deselect]
        assert len(prefixes) == len(set(prefixes)), suite.shim
        for entry in suite.deselect:
            assert entry.reason.split(":")[0] in ("environment", "time"), entry
            assert entry.prefix.split("::")[0] in suite.files, entry
