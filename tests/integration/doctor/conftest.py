"""Doctor tests read credentialed DSNs (redaction remembers their secrets): forget them after
each module so later tests see unmasked text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poolmon.core.redact import forget_secrets


@pytest.fixture(autouse=True, scope="module")
def _forget_secrets() -> Iterator[None]:
    yield
    forget_secrets()
