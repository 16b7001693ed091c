"""CPython's own ``test_concurrent_futures`` executor tests, run with and without the futures shim.

Source: Debian's ``libpython3.11-testsuite`` (CPython **3.11.2**'s ``Lib/test``, installed by
``scripts/services`` at ``/usr/lib/python3.11/test``), run on this interpreter (3.11.7). No
package on PyPI ships CPython's own test suite for 3.11.7, and the tests must run on a fresh
machine without fetching anything. The 3.11.2 file exercises the same ``concurrent.futures``
code paths (thread.py is unchanged between 3.11.2 and 3.11.7 except for comments); any failure
caused by the version skew shows up in the baseline run too, so it cannot count against the shim.

The test package is linked into a private directory on ``PYTHONPATH`` (putting
``/usr/lib/python3.11`` itself there would shadow this interpreter's standard library).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

__all__ = ["CLASSES", "DESELECT", "PROCESS_CLASSES", "TESTSUITE", "available", "run"]

#: Where Debian's libpython3.11-testsuite puts CPython's Lib/test.
TESTSUITE: Final = Path(os.environ.get("POOLMON_CPYTHON_TESTS", "/usr/lib/python3.11/test"))

#: The thread-pool test classes run (and the Future tests).
CLASSES: Final = (
    "ThreadPoolExecutorTest",
    "ThreadPoolShutdownTest",
    "ThreadPoolWaitTests",
    "ThreadPoolAsCompletedTest",
    "ThreadPoolInitializerTest",
    "ThreadPoolFailingInitializerTest",
    "FutureTests",
)

#: The process-pool test classes run: the ``fork`` start method's (the file generates each class
#: for fork, forkserver and spawn; the shim observes the parent only, so the start method changes
#: nothing it records, and the forkserver and spawn copies add minutes of interpreter start-ups).
#: ``ProcessPoolForkExecutorDeadlockTest`` is left out too: it kills and crashes workers on
#: purpose, with 14 tests of ~0.5-10 s each; the break path it drives is covered by
#: tests/integration/futures/test_process_pool.py.
PROCESS_CLASSES: Final = (
    "ProcessPoolForkProcessPoolExecutorTest",
    "ProcessPoolForkProcessPoolShutdownTest",
    "ProcessPoolForkWaitTest",
    "ProcessPoolForkAsCompletedTest",
    "ProcessPoolForkInitializerTest",
    "ProcessPoolForkFailingInitializerTest",
)

#: Tests left out of both runs, and why.
_ISOLATED = (
    "environment: runs a child interpreter in isolated mode (-I, script_helper), which ignores "
    "PYTHONPATH and so cannot import the linked test package (fails without poolmon too)"
)
DESELECT: Final[dict[str, str]] = {
    "ThreadPoolShutdownTest.test_cancel_futures_wait_false": _ISOLATED,
    "ThreadPoolShutdownTest.test_hang_gh83386": _ISOLATED,
    "ThreadPoolShutdownTest.test_interpreter_shutdown": _ISOLATED,
    "ProcessPoolForkProcessPoolShutdownTest.test_interpreter_shutdown": _ISOLATED,
}

_DRIVER: Final = r"""
import json, sys, unittest
if sys.argv[1] == "on":
    from poolmon.core.registry import PoolRegistry
    from poolmon.shims import futures
    registry = PoolRegistry()
    seen = {"threads": 0, "processes": 0}
    def count(event):
        if event.kind == "create":
            kind = event.pool.split(":", 1)[0]
            seen[kind] = seen.get(kind, 0) + 1
    registry.subscribe(count)
    assert futures.instrument(registry=registry)
import test.test_concurrent_futures as m
loader = unittest.TestLoader()
suite = unittest.TestSuite(
    loader.loadTestsFromTestCase(getattr(m, c)) for c in sys.argv[3].split(",")
)
skip = set(json.loads(sys.argv[4]))
def flat(s):
    for t in s:
        yield from (flat(t) if isinstance(t, unittest.TestSuite) else [t])
tests = [t for t in flat(suite) if t.id().split(".", 2)[-1] not in skip]
runner = unittest.TextTestRunner(stream=open("/dev/null", "w"), verbosity=0)
result = runner.run(unittest.TestSuite(tests))
out = {"run": result.testsRun,
       "failed": sorted(t.id() for t, _ in result.failures + result.errors),
       "skipped": len(result.skipped)}
if sys.argv[1] == "on":
    out["shim_active"] = futures.is_instrumented()
    out["workers_created"] = seen
    errors = registry.self_metrics.snapshot().get("poolmon.shim.errors", {})
    out["shim_errors"] = sum(errors.values())
open(sys.argv[2], "w").write(json.dumps(out))
"""


def available() -> bool:
    return (TESTSUITE / "test_concurrent_futures.py").is_file()


def run(mode: str, classes: tuple[str, ...] = CLASSES, timeout: float = 300.0) -> dict[str, object]:
    """Run ``classes`` with the shim ``on`` or ``off``; outcome counts and failed ids."""
    with tempfile.TemporaryDirectory(prefix="poolmon-cpython-") as tmp:
        (Path(tmp) / "test").symlink_to(TESTSUITE)
        out = Path(tmp) / "result.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, os.getcwd()])}
        subprocess.run(
            [
                sys.executable,
                "-c",
                _DRIVER,
                mode,
                str(out),
                ",".join(classes),
                json.dumps(sorted(DESELECT)),
            ],
            env=env,
            timeout=timeout,
            check=False,
            capture_output=True,
        )
        result: dict[str, object] = json.loads(out.read_text())
        return result
