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
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from poolmon.core.redact import scrub
from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.run.env import INFO_FILE_VAR
from poolmon.shims import SHIMS

if TYPE_CHECKING:
    from poolmon.exporters.config import ExporterConfig, Exporters

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
    closers: list[Callable[[], None]] = field(default_factory=list)

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
            # Prometheus is served here, following forks, unless the program runs its own
            # pre-fork setup (POOLMON_MULTIPROC_DIR: it then writes snapshots, see exporters).
            follow = "prometheus" in config.exporters and config.multiprocess_dir is None
            if follow:
                others = tuple(e for e in config.exporters if e != "prometheus")
                config_rest = replace(config, exporters=others)
            else:
                config_rest = config
            exporters = start_exporters(config_rest, registry=registry)
            booted.exporters = exporters
            booted.prometheus_url = exporters.prometheus_url
            if follow:
                booted.prometheus_url = _serve_following_forks(config, reg, booted)
        except Exception as exc:
            _complain(reg, "run", "exporters not started", exc)
        _write_info(environ, booted, reg)
        _booted = booted
        return booted


def _close_exporters(booted: Booted) -> None:
    if booted.pid != os.getpid():
        return  # a forked child: the parent owns the exporters
    closers: list[Callable[[], None]] = list(reversed(booted.closers))
    if booted.exporters is not None:
        closers.append(booted.exporters.close)
    for close in closers:
        try:
            close()
        except Exception as exc:
            _complain(get_default_registry(), "run_close", "closing exporters failed", exc)


def _serve_following_forks(config: ExporterConfig, registry: PoolRegistry, booted: Booted) -> str:
    """Serve /metrics for this process *and every process it forks later*.

    ``poolmon run -- gunicorn -w 4 app:app`` boots in gunicorn's master; the workers are forked
    from it, and the threads serving /metrics do not survive a fork. So each forked child starts
    a snapshot writer into a directory private to this run, and this process's endpoint merges
    those files with its own live pools at every scrape (pools of the same name add up, see
    :mod:`poolmon.exporters.multiprocess`). Without forks the directory stays empty and the
    endpoint serves this process's pools as they are.
    """
    from poolmon.exporters.multiprocess import SnapshotWriter
    from poolmon.exporters.prometheus import serve

    directory = tempfile.mkdtemp(prefix="poolmon-run-")
    server = serve(
        config.port,
        config.addr,
        registry=registry,
        certfile=config.certfile,
        keyfile=config.keyfile,
        semconv=config.semconv,
        multiprocess_dir=directory,
        include_own_pools=True,
    )
    booted.closers.append(server.close)
    booted.closers.append(lambda: shutil.rmtree(directory, ignore_errors=True))

    def in_forked_child() -> None:
        try:
            writer = SnapshotWriter(directory, registry=registry).start()
            # os._exit (gunicorn workers, multiprocessing) skips atexit: the writer's periodic
            # files carry the counts; atexit covers a normal exit.
            atexit.register(writer.close)
        except Exception as exc:
            _complain(registry, "run_fork", "forked child not exported", exc)

    os.register_at_fork(after_in_child=in_forked_child)
    return server.url


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
