"""A hot lane that fails: proves a shim's inline lane writes can never break the host."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ExplodingLane"]


class ExplodingLane:
    """Open, with a working clock, but every container it should hold raises when touched."""

    open = True
    now = staticmethod(time.perf_counter)

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"poolmon bug: lane.{name}")
