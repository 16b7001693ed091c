"""pytest plugin: the ``pool_conformance`` fixture (registered under the ``pytest11`` entry point).

Installed with poolmon, so a pool author's test suite needs no configuration::

    def test_my_pool_speaks_the_standard(pool_conformance):
        pool_conformance.check(MyPoolAdapter())      # raises ConformanceError naming the rule

Without the entry point (poolmon vendored, or plugins disabled), ``pytest_plugins =
["poolmon.conformance.pytest_plugin"]`` in a ``conftest.py`` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the kit is imported when used: loading the plugin must cost nothing
    from poolmon.conformance import kit

__all__ = ["ConformanceKit", "pool_conformance"]


class ConformanceKit:
    """The fixture's value: :func:`poolmon.conformance.kit.check` and :func:`~.kit.run`."""

    def check(self, adapter: kit.PoolAdapter, scenarios: Sequence[str] | None = None) -> kit.Report:
        """Run the scenarios (default: all); raise ``ConformanceError`` naming each rule broken."""
        from poolmon.conformance import kit

        return kit.check(adapter, kit.SCENARIOS if scenarios is None else scenarios)

    def run(self, adapter: kit.PoolAdapter, scenarios: Sequence[str] | None = None) -> kit.Report:
        """Run the scenarios; return the report (failures and streams) without raising."""
        from poolmon.conformance import kit

        return kit.run(adapter, kit.SCENARIOS if scenarios is None else scenarios)


@pytest.fixture
def pool_conformance() -> ConformanceKit:
    """Drive a pool (through your :class:`~poolmon.conformance.kit.PoolAdapter`) through the
    kit's scenarios and fail with the violated rule."""
    return ConformanceKit()
