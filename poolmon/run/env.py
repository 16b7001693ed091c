"""The environment ``poolmon run`` gives the program it starts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["BOOTSTRAP_DIR", "INFO_FILE_VAR", "RUN_MARK_VAR", "build_environment"]

#: The directory holding poolmon's ``sitecustomize.py``; first on the program's ``PYTHONPATH``.
BOOTSTRAP_DIR: Final = str(Path(__file__).resolve().parent / "_bootstrap")

#: Set by ``poolmon run``: the bootstrap only acts when it is present.
RUN_MARK_VAR: Final = "POOLMON_RUN"

#: When set, the bootstrap writes what it started (JSON: pid, shims, prometheus_url) to this path.
INFO_FILE_VAR: Final = "POOLMON_RUN_INFO"


def build_environment(
    settings: Mapping[str, str], environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """``environ`` plus ``settings`` (``POOLMON_*`` values) with the bootstrap first on
    ``PYTHONPATH`` (once, even when ``poolmon run`` is nested)."""
    env = dict(environ)
    env.update(settings)
    env[RUN_MARK_VAR] = "1"
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != BOOTSTRAP_DIR]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *parts])
    return env
