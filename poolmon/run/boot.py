"""What the ``poolmon run`` bootstrap does inside the program's interpreter.

:func:`start` instruments every supported installed library and starts the exporters described
by the ``POOLMON_*`` environment (:class:`~poolmon.exporters.config.ExporterConfig`). It runs once
per process, never raises and never writes to stdout: a problem is logged once (stderr, through
the ``poolmon`` logger) and counted in the registry's self-metrics, and the program runs on.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.run.env import INFO_FILE_VAR
from poolmon.shims import SHIMS

if TYPE_CHECKING:
    from poolmon.exporters.config import Exporters

__all__ = ["Booted", "instrument_all", "start"]

_log = logging.getLogger("poolmon")
_lock = threading.Lock()
_booted: Booted | None = None


@dataclass
class Booted:
    """What :func:`start` turned on in this process."""

    pid: int
    shims: list[str] = field(default_factory=list)
    prometheus_url: str | None = None
    exporters: Exporters | None = None

    def as_json(self) -> str:
        return json.dumps(
            {"pid": self.pid, "shims": self.shims, "prometheus_url": self.prometheus_url}
        )


def _complain(registry: PoolRegistry, key: str, what: str, exc: BaseException) -> None:
    registry.self_metrics.inc("poolmon.export.errors", key)
    log_once(_log, f"run:{key}", "poolmon run: %s: %s", what, scrub(f"{type(exc).__name__}: {exc}"))


def instrument_all(registry: PoolRegistry | None = None) -> list[str]:
    """Instrument every shim whose library is installed and supported; the names now active.

    One shim failing (or missing from this poolmon build) never stops the others.
    """
    reg = registry if registry is not None else get_default_registry()
    active: list[str] = []
    for name, path in SHIMS.items():
        try:
            module = importlib.import_module(path)
            if module.available() and module.instrument(registry=registry):
                active.append(name)
        except Exception as exc:
            reg.self_metrics.inc("poolmon.shim.errors", name)
            log_once(_log, f"run:shim:{name}", "poolmon run: shim %s not active: %s", name, exc)
    return active


def start(
    environ: Mapping[str, str] = os.environ, *, registry: PoolRegistry | None = None
) -> Booted:
    """Instrument and start exporters once per process (later calls return the first result)."""
    global _booted
    with _lock:
        if _booted is not None and _booted.pid == os.getpid():
            return _booted
        reg = registry if registry is not None else get_default_registry()
        booted = Booted(pid=os.getpid())
        # Registered before anything can create a weakref.finalize: atexit runs last-in first-out,
        # so urllib3's and poolmon's pool finalizers (which record the last evictions at exit)
        # run before the exporters are closed, and the event log gets those events.
        atexit.register(_close_exporters, booted)
        booted.shims = instrument_all(registry)
        try:
            from poolmon.exporters.config import ExporterConfig, start_exporters

            config = ExporterConfig.from_env(environ)
            if not config.exporters and not environ.get("POOLMON_EXPORTERS"):
                # `poolmon run` with no exporter named serves Prometheus metrics.
                config = replace(config, exporters=("prometheus",))
            # The program may fork workers (gunicorn -w N): their pools are served here too.
            config = replace(config, follow_forks=True)
            exporters = start_exporters(config, registry=registry)
            booted.exporters = exporters
            booted.prometheus_url = exporters.prometheus_url
        except Exception as exc:
            _complain(reg, "run", "exporters not started", exc)
        _write_info(environ, booted, reg)
        _booted = booted
        return booted


def _close_exporters(booted: Booted) -> None:
    exporters = booted.exporters
    if exporters is None or booted.pid != os.getpid():
        return  # nothing started, or a forked child: the parent owns the exporters
    try:
        exporters.close()
    except Exception as exc:
        _complain(get_default_registry(), "run_close", "closing exporters failed", exc)


def _write_info(environ: Mapping[str, str], booted: Booted, registry: PoolRegistry) -> None:
    path = environ.get(INFO_FILE_VAR)
    if not path:
        return
    # The first interpreter of the run writes it (Python subprocesses inherit the variable and
    # must not overwrite it); written aside and linked in, so a reader never sees half a file.
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(booted.as_json() + "\n", encoding="utf-8")
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except Exception as exc:
        _complain(registry, "run_info", f"cannot write {INFO_FILE_VAR}", exc)
