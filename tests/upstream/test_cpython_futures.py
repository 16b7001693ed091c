"""CPython's test_concurrent_futures thread-pool classes: no new failures with the futures shim on."""

from __future__ import annotations

import os

import pytest

from tests.upstream import cpython_futures

pytestmark = pytest.mark.integration


def test_cpython_thread_pool_tests_pass_alike_with_the_shim() -> None:
    if not cpython_futures.available():
        if os.environ.get("CI") == "true":
            pytest.fail("libpython3.11-testsuite is missing (scripts/services installs it)")
        pytest.skip("CPython's test package is not installed (libpython3.11-testsuite)")
    off = cpython_futures.run("off")
    on = cpython_futures.run("on")
    assert on["shim_active"] is True
    assert off["run"] == on["run"] and int(str(on["run"])) >= 50
    assert on["failed"] == off["failed"] == []
