"""Exporter configuration in code or by environment, and one call that starts them all.

Environment (``POOLMON_*``; OTLP itself also honours the standard ``OTEL_*`` variables):

=========================== =================================================== ====================
variable                    meaning                                             default
=========================== =================================================== ====================
POOLMON_EXPORTERS           comma list of ``prometheus``, ``otlp``, ``jsonl``   (none)
POOLMON_PROMETHEUS_PORT     port of ``/metrics`` (0: a free port)               9464
POOLMON_PROMETHEUS_ADDR     address to bind                                     127.0.0.1
POOLMON_PROMETHEUS_CERTFILE / POOLMON_PROMETHEUS_KEYFILE: serve HTTPS           (HTTP)
POOLMON_OTLP_ENDPOINT       OTLP base URL (or ``OTEL_EXPORTER_OTLP_ENDPOINT``)  (OTel default)
POOLMON_JSONL_PATH          event log file for the ``jsonl`` exporter           poolmon-events.jsonl
POOLMON_SEMCONV             ``1``/``true``: official db/http semantic           false
                            convention names
POOLMON_LEAK_THRESHOLD      seconds a borrow may last before ``leak_suspected`` (off)
POOLMON_MULTIPROC_DIR       pre-fork: write snapshots here instead of serving   (off)
=========================== =================================================== ====================
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from poolmon.core.registry import PoolRegistry, get_default_registry
from poolmon.core.selfmetrics import log_once
from poolmon.core.sinks import JsonlSink
from poolmon.errors import ConfigError

__all__ = ["EXPORTER_NAMES", "ExporterConfig", "Exporters", "start_exporters"]

EXPORTER_NAMES: Final = ("prometheus", "otlp", "jsonl")
_log = logging.getLogger("poolmon.exporters")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class ExporterConfig:
    """Which exporters to run and how. Validated on construction (ConfigError names the field)."""

    exporters: tuple[str, ...] = ()
    port: int = 9464
    addr: str = "127.0.0.1"
    certfile: str | None = None
    keyfile: str | None = None
    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    otlp_interval: float | None = None
    jsonl_path: str = "poolmon-events.jsonl"
    semconv: bool = False
    leak_threshold: float | None = None
    multiprocess_dir: str | None = None
    #: Serve the pools of processes this one forks later too (``poolmon run`` sets it): each forked
    #: child writes snapshots that this process's endpoint merges with its own pools.
    follow_forks: bool = False

    def __post_init__(self) -> None:
        for name in self.exporters:
            if name not in EXPORTER_NAMES:
                raise ConfigError("exporters", name, "a subset of " + ", ".join(EXPORTER_NAMES))
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError("port", self.port, "an integer in [0, 65535]")
        if self.leak_threshold is not None and not (
            math.isfinite(self.leak_threshold) and self.leak_threshold > 0
        ):
            raise ConfigError("leak_threshold", self.leak_threshold, "seconds > 0, or None")
        if not is_listen_host(self.addr):
            raise ConfigError("addr", self.addr, "an IP address or a host name")
        if self.otlp_endpoint is not None and not _is_endpoint(self.otlp_endpoint):
            raise ConfigError(
                "otlp_endpoint",
                self.otlp_endpoint,
                _ENDPOINT_ACCEPTED,
            )
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError(
                "certfile/keyfile", (self.certfile, self.keyfile), "both set or both unset"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ExporterConfig:
        """Read the ``POOLMON_*`` variables (see the module docstring)."""
        raw_list = environ.get("POOLMON_EXPORTERS", "")
        names = tuple(n.strip().lower() for n in raw_list.split(",") if n.strip())
        # Empty means unset; anything else must name exporters (a stray "," is a typo).
        if any(name not in EXPORTER_NAMES for name in names) or (raw_list.strip() and not names):
            raise ConfigError(
                "POOLMON_EXPORTERS", raw_list, "a comma list of " + ", ".join(EXPORTER_NAMES)
            )
        port = _int_env(environ, "POOLMON_PROMETHEUS_PORT", 9464, 0, 65535)
        leak = _float_env(environ, "POOLMON_LEAK_THRESHOLD")
        semconv_raw = environ.get("POOLMON_SEMCONV", "").strip().lower()
        if semconv_raw in _TRUE:
            semconv = True
        elif semconv_raw in _FALSE:
            semconv = False
        else:
            raise ConfigError("POOLMON_SEMCONV", semconv_raw, "true/false, 1/0, yes/no, on/off")
        addr = environ.get("POOLMON_PROMETHEUS_ADDR", "").strip() or "127.0.0.1"
        if not is_listen_host(addr):
            raise ConfigError("POOLMON_PROMETHEUS_ADDR", addr, "an IP address or a host name")
        endpoint = environ.get("POOLMON_OTLP_ENDPOINT", "").strip() or None
        if endpoint is not None and not _is_endpoint(endpoint):
            raise ConfigError(
                "POOLMON_OTLP_ENDPOINT",
                endpoint,
                _ENDPOINT_ACCEPTED,
            )
        return cls(
            exporters=names,
            port=port,
            addr=addr,
            certfile=environ.get("POOLMON_PROMETHEUS_CERTFILE") or None,
            keyfile=environ.get("POOLMON_PROMETHEUS_KEYFILE") or None,
            otlp_endpoint=endpoint,
            jsonl_path=environ.get("POOLMON_JSONL_PATH") or "poolmon-events.jsonl",
            semconv=semconv,
            leak_threshold=leak,
            multiprocess_dir=environ.get("POOLMON_MULTIPROC_DIR") or None,
        )


_ENDPOINT_ACCEPTED: Final = "an http(s) URL or host:port with a host, or unix:///path"
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_listen_host(text: str) -> bool:
    """An IP literal (IPv6 with or without brackets) or a syntactically valid host name."""
    try:
        ipaddress.ip_address(text[1:-1] if text.startswith("[") and text.endswith("]") else text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    return 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(p) for p in name.split("."))


def _is_endpoint(text: str) -> bool:
    """An OTLP endpoint: an http(s) URL or ``host:port`` (gRPC's form) with a usable host, or
    gRPC's ``unix:///path``."""
    if any(c.isspace() or not c.isprintable() for c in text):
        return False
    if text.startswith("unix:"):
        return len(text.removeprefix("unix:").lstrip("/")) > 0
    try:
        parts = urlsplit(text if "://" in text else "http://" + text)
        parts.port  # noqa: B018  (ValueError: not a number or outside 0-65535)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _int_env(environ: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, raw, f"an integer in [{low}, {high}]") from None
    if not low <= value <= high:
        raise ConfigError(name, raw, f"an integer in [{low}, {high}]")
    return value


def _float_env(environ: Mapping[str, str], name: str) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, raw, "a number of seconds > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(name, raw, "a number of seconds > 0")
    return value


@dataclass
class Exporters:
    """The exporters :func:`start_exporters` started. ``close()`` stops every one of them."""

    config: ExporterConfig
    prometheus_url: str | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` on :meth:`close` (closers run last first)."""
        self._closers.append(closer)

    def close(self) -> None:
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            closer()

    def __enter__(self) -> Exporters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_exporters(config: ExporterConfig, *, registry: PoolRegistry | None = None) -> Exporters:
    """Start what ``config`` asks for. A failure to start one stops the ones already started."""
    handle = Exporters(config)
    try:
        _start(config, registry, handle)
    except BaseException:
        handle.close()
        raise
    return handle


def _start(config: ExporterConfig, registry: PoolRegistry | None, handle: Exporters) -> None:
    if "prometheus" in config.exporters:
        if config.multiprocess_dir is not None:
            # A pre-fork worker: write snapshots; one process serves the merged directory.
            from poolmon.exporters.multiprocess import SnapshotWriter

            writer = SnapshotWriter(config.multiprocess_dir, registry=registry).start()
            handle.on_close(writer.close)
        else:
            from poolmon.exporters.prometheus import serve

            follow_dir = _follow_forks_dir(registry, handle) if config.follow_forks else None
            server = serve(
                config.port,
                config.addr,
                registry=registry,
                certfile=config.certfile,
                keyfile=config.keyfile,
                semconv=config.semconv,
                multiprocess_dir=follow_dir,
                include_own_pools=follow_dir is not None,
            )
            handle.on_close(server.close)
            handle.prometheus_url = server.url
    if "otlp" in config.exporters:
        from poolmon.exporters.otel import start_otlp

        otlp = start_otlp(
            config.otlp_endpoint,
            protocol=config.otlp_protocol,
            interval=config.otlp_interval,
            registry=registry,
            semconv=config.semconv,
        )
        handle.on_close(otlp.shutdown)
    if "jsonl" in config.exporters:
        reg = registry if registry is not None else get_default_registry()
        sink = JsonlSink(config.jsonl_path)
        unsubscribe = reg.subscribe(sink)
        handle.on_close(sink.close)
        handle.on_close(unsubscribe)
    if config.leak_threshold is not None:
        _start_leak_watch(config.leak_threshold, registry, handle)


def _follow_forks_dir(registry: PoolRegistry | None, handle: Exporters) -> str:
    """A directory private to this process where every process it forks from now on writes
    its pool snapshots, for this process's endpoint to merge with its own pools.

    ``poolmon run -- gunicorn -w 4 app:app`` boots in gunicorn's master; the workers are forked
    from it and the thread serving /metrics does not survive a fork. Without forks the directory
    stays empty and the endpoint serves this process's pools as they are.
    """
    import shutil
    import tempfile

    from poolmon.exporters.multiprocess import SnapshotWriter

    directory = tempfile.mkdtemp(prefix="poolmon-forks-")
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:
            shutil.rmtree(directory, ignore_errors=True)

    def in_forked_child() -> None:
        try:
            writer = SnapshotWriter(directory, registry=registry).start()
            # os._exit (gunicorn workers, multiprocessing) skips atexit: the writer's periodic
            # files carry the counts; atexit covers a normal exit.
            atexit.register(writer.close)
        except Exception as exc:
            reg = registry if registry is not None else get_default_registry()
            reg.self_metrics.inc("poolmon.export.errors", "follow_forks")
            log_once(_log, "follow-forks", "poolmon: a forked child is not exported: %s", exc)

    os.register_at_fork(after_in_child=in_forked_child)
    handle.on_close(remove)
    return directory


def _start_leak_watch(threshold: float, registry: PoolRegistry | None, handle: Exporters) -> None:
    """A daemon thread reporting borrows older than ``threshold`` (``leak_suspected`` errors)."""
    import threading

    stop = threading.Event()
    period = min(max(threshold / 2.0, 0.05), 5.0)

    def watch() -> None:
        while not stop.wait(period):
            reg = registry if registry is not None else get_default_registry()
            for ledger in reg.ledgers():
                try:
                    ledger.check_leaks(threshold)
                except Exception:  # never let the watchdog die of one pool
                    reg.self_metrics.inc("poolmon.export.errors", "leak_watch")

    thread = threading.Thread(target=watch, name="poolmon-leak-watch", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(timeout=5)

    handle.on_close(close)
