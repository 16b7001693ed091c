"""``poolmon run``: run any Python program with every installed shim active, no code changes.

How it works (the same way ``opentelemetry-instrument`` does): the command line is turned into
``POOLMON_*`` environment variables, the directory :data:`BOOTSTRAP_DIR` (which holds only a
``sitecustomize.py``) is put first on ``PYTHONPATH``, and the command is executed in place
(``exec``: same process id, stdin/stdout/stderr, signals and exit code). Python imports
``sitecustomize`` at start-up; ours calls :func:`poolmon.run.boot.start`, which instruments every
supported installed library and starts the configured exporters, then hands over to any
``sitecustomize`` that was already on the path.

Python subprocesses of the program inherit the environment and are instrumented too.
"""

from __future__ import annotations

from poolmon.run.env import BOOTSTRAP_DIR, build_environment

__all__ = ["BOOTSTRAP_DIR", "build_environment"]
