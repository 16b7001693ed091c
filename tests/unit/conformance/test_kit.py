"""The conformance kit: a pool written against poolmon.api and poolmon's own pools pass it; three
deliberately wrong pools fail it, each with the rule it breaks."""

from __future__ import annotations

import pytest

from poolmon import api
from poolmon.conformance import kit
from poolmon.conformance.pytest_plugin import ConformanceKit
from tests.unit.conformance.adapters import (
    AsyncPoolAdapter,
    PoolAdapter,
    TinyPoolAdapter,
    wrong_adapter,
)


def test_a_pool_written_only_against_poolmon_api_passes(
    pool_conformance: ConformanceKit,
) -> None:
    report = pool_conformance.check(TinyPoolAdapter())
    assert set(report.streams) == set(kit.SCENARIOS)
    contention = [line for line in report.streams["contention"] if '"kind":"wait"' in line]
    assert contention, "4 callers on 2 resources queued at least once"
    assert any('"error_type":"timeout"' in line for line in report.streams["timeout"])
    assert api.attached() is None  # the kit put everything back


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("double-return", "return-without-borrow"),
        ("borrow-after-evict", "after-evict"),
        ("pending-never-resolved", "pending-unresolved"),
    ],
)
def test_a_wrong_pool_fails_with_the_rule_it_breaks(kind: str, rule: str) -> None:
    with pytest.raises(kit.ConformanceError) as caught:
        kit.check(wrong_adapter(kind))
    assert rule in caught.value.rules
    assert rule in str(caught.value)
    # Only the fault that was built in: no unrelated rule fires.
    assert caught.value.rules == {rule}


def test_poolmon_pool_passes() -> None:
    report = kit.check(PoolAdapter())
    assert any('"kind":"evict"' in line for line in report.streams["broken"])


def test_poolmon_async_pool_passes() -> None:
    kit.check(AsyncPoolAdapter())


def test_an_adapter_that_cannot_time_out_is_reported() -> None:
    class NoTimeout(TinyPoolAdapter):
        def open(self, max_size: int, registry: object) -> None:
            super().open(max_size + 1, registry)  # type: ignore[arg-type]

    report = kit.run(NoTimeout(), ["timeout"])
    assert {f.rule for f in report.failures} == {"kit-adapter"}


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="borrow, contention, timeout, broken, close"):
        kit.run(TinyPoolAdapter(), ["nope"])
