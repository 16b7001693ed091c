"""Every shim scenario runs twice: on the compiled fast path (``poolmon._hot``) and on the
pure-Python wrappers, which stay the reference and the fallback where no compiler was found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from poolmon.core.compiled import PURE_PYTHON_ENV, compiled_module, set_compiled
from tests.conftest import require


@pytest.fixture(autouse=True, params=["compiled", "python"])
def implementation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Selects the implementation before any ledger is made or shim installed; subprocesses
    (``opentelemetry-instrument``, ``poolmon run``) get it through the environment."""
    if request.param == "compiled":
        monkeypatch.delenv(PURE_PYTHON_ENV, raising=False)
        set_compiled(enabled=None)
        require(compiled_module() is not None, "poolmon._hot (build it: pip install -e .)")
    else:
        monkeypatch.setenv(PURE_PYTHON_ENV, "1")
        set_compiled(enabled=False)
    try:
        yield request.param
    finally:
        set_compiled(enabled=None)
