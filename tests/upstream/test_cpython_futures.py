"""CPython's test_concurrent_futures executor classes: no new failures with the futures shim on."""

from __future__ import annotations

import os

import pytest

from tests.upstream import cpython_futures

pytestmark = pytest.mark.integration


def _require_suite() -> None:
    if not cpython_futures.available():
        if os.environ.get("CI") == "true":
            pytest.fail("libpython3.11-testsuite is missing (scripts/services installs it)")
        pytest.skip("CPython's test package is not installed (libpython3.11-testsuite)")


def test_cpython_thread_pool_tests_pass_alike_with_the_shim() -> None:
    _require_suite()
    off = cpython_futures.run("off")
    on = cpython_futures.run("on")
    assert on["shim_active"] is True and on["shim_errors"] == 0
    assert on["workers_created"]["threads"] > 0  # type: ignore[index]
    assert off["run"] == on["run"] and int(str(on["run"])) >= 50
    assert on["failed"] == off["failed"] == []


def test_cpython_process_pool_tests_pass_alike_with_the_shim() -> None:
    _require_suite()
    off = cpython_futures.run("off", cpython_futures.PROCESS_CLASSES)
    on = cpython_futures.run("on", cpython_futures.PROCESS_CLASSES)
    assert on["shim_active"] is True and on["shim_errors"] == 0
    assert on["workers_created"]["processes"] > 0  # type: ignore[index]
    assert off["run"] == on["run"] and int(str(on["run"])) >= 40
    assert (off["skipped"], on["failed"]) == (on["skipped"], off["failed"])
    assert on["failed"] == []
