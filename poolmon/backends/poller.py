"""Polls backends and proxies in the background; a source that fails is down, never fatal.

Each source (a :class:`Reader`) is read by :meth:`Poller.poll_once`, which the background thread
calls every ``interval`` seconds and tests call directly (with a :class:`~poolmon.core.clock.
ManualClock`, no sleeps). Per source:

1. A successful read replaces the source's reading and marks it up.
2. A failed read marks it down, drops its reading (stale counts must not look live), counts the
   failure in ``backend.poll.errors{error.type}`` and schedules the next attempt with exponential
   backoff (``interval``, doubling, at most ``max_backoff``; :class:`poolmon.pool.backoff.Backoff`
   without jitter: one poller per source cannot storm).
3. Logging: one line when a source goes down, then at most one per ``log_window`` seconds while
   it stays down, and one when it is back. Every message passes :func:`~poolmon.core.redact.
   scrub`: a driver's error text that echoes a DSN or password loses it.

Concurrency: polls run one at a time (``_poll_lock``), each source's reader is only ever used
under it; snapshots (scrapes, ``top``) take ``_lock`` only to copy the per-source state, so a
slow backend never blocks a scrape.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from poolmon.backends.classify import classify
from poolmon.backends.readings import Reading, SourceSnapshot
from poolmon.core.catalog import POLL_ERROR_TYPES
from poolmon.core.clock import Clock, SystemClock
from poolmon.core.redact import scrub
from poolmon.errors import ConfigError
from poolmon.pool.backoff import Backoff

__all__ = ["DEFAULT_INTERVAL", "Poller", "Reader"]

_log = logging.getLogger("poolmon.backends")

DEFAULT_INTERVAL = 10.0


class Reader(Protocol):
    """One backend or proxy: ``read()`` polls it (raising on failure), ``close()`` lets go."""

    @property
    def name(self) -> str: ...
    @property
    def system(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    def read(self) -> Reading: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Source:
    reader: Reader
    backoff: Backoff
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POLL_ERROR_TYPES, 0))
    reading: Reading | None = None
    up: bool = False
    polled: bool = False
    polls: int = 0
    last_error: str | None = None
    logged_until: float = float("-inf")
    due_at: float = float("-inf")  # monotonic time of the next poll


def _check_interval(name: str, value: float, low: float) -> float:
    if not isinstance(value, int | float) or not low <= float(value) <= 86400.0:
        raise ConfigError(name, value, f"a number of seconds in [{low:g}, 86400]")
    return float(value)


class Poller:
    """Reads every source on an interval; see the module docstring for failures and logging."""

    def __init__(
        self,
        readers: Iterable[Reader],
        *,
        interval: float = DEFAULT_INTERVAL,
        max_backoff: float | None = None,
        log_window: float = 300.0,
        clock: Clock | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.interval = _check_interval("interval", interval, 0.05)
        self.max_backoff = _check_interval(
            "max_backoff", max_backoff if max_backoff is not None else max(60.0, interval), 0.05
        )
        self.log_window = _check_interval("log_window", log_window, 0.0)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._logger = logger if logger is not None else _log
        self._sources = [_Source(r, Backoff(self.interval, self.max_backoff, 0.0)) for r in readers]
        names = [s.reader.name for s in self._sources]
        if len(set(names)) != len(names):
            raise ConfigError("sources", names, "each backend and proxy named once")
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def names(self) -> list[str]:
        return [s.reader.name for s in self._sources]

    # ------------------------------------------------------------------ polling

    def poll_once(self, *, force: bool = False) -> None:
        """Read every source that is due (every source with ``force``, backoff or not)."""
        with self._poll_lock:
            for source in self._sources:
                now = self._clock.monotonic()
                if force or now >= source.due_at:
                    self._poll(source, now)

    def _poll(self, source: _Source, now: float) -> None:
        name = source.reader.name
        try:
            reading = source.reader.read()
        except Exception as exc:
            kind = classify(exc)
            text = scrub(f"{type(exc).__name__}: {exc}").strip().splitlines()
            message = text[0] if text else type(exc).__name__
            delay = source.backoff.failure(now, exc)
            source.backoff.last_error = None  # keep no exception (and its traceback) alive
            source.due_at = now + delay
            with self._lock:
                was_up = source.up or not source.polled
                source.errors[kind] = source.errors.get(kind, 0) + 1
                source.reading = None
                source.up = False
                source.polled = True
                source.polls += 1
                source.last_error = f"{kind}: {message}"
            if was_up or now >= source.logged_until:
                source.logged_until = now + self.log_window
                self._logger.warning(
                    "poolmon: %s is down (%s: %s); retrying in %.3gs, further failures within "
                    "%gs are only counted in backend_poll_errors_total",
                    name,
                    kind,
                    message,
                    delay,
                    self.log_window,
                )
            return
        failures = source.backoff.failures
        source.backoff.success()
        source.due_at = now + self.interval
        with self._lock:
            was_down = source.polled and not source.up
            source.reading = reading
            source.up = True
            source.polled = True
            source.polls += 1
            source.last_error = None
        if was_down:
            source.logged_until = float("-inf")
            self._logger.warning("poolmon: %s is up again after %d failed polls", name, failures)

    def snapshot(self) -> list[SourceSnapshot]:
        """Every source's state now (cheap: copies, no I/O)."""
        with self._lock:
            return [
                SourceSnapshot(
                    name=s.reader.name,
                    system=s.reader.system,
                    address=s.reader.address,
                    port=s.reader.port,
                    up=s.up,
                    reading=s.reading,
                    errors=dict(s.errors),
                    last_error=s.last_error,
                    polls=s.polls,
                )
                for s in self._sources
            ]

    # ------------------------------------------------------------------ background thread

    def start(self) -> Poller:
        """Poll in a daemon thread until :meth:`close` (the first poll runs at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="poolmon-backends", daemon=True)
            self._thread.start()
        return self

    def seconds_to_next_poll(self) -> float:
        """How long until a source is due (at most one interval)."""
        now = self._clock.monotonic()
        due = min((s.due_at for s in self._sources), default=now + self.interval)
        return max(0.0, min(due, now + self.interval) - now)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the thread must survive anything
                self._logger.warning("poolmon: backend poll failed: %s", scrub(repr(exc)))
            # Never spin: a source whose poll raised before scheduling waits a full interval.
            self._stop.wait(self.seconds_to_next_poll() or self.interval)

    def close(self) -> None:
        """Stop the thread and close every reader's connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._poll_lock:
            for source in self._sources:
                with contextlib.suppress(Exception):  # closing is best effort
                    source.reader.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _require_driver(module: str, parameter: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(parameter, module, f"{module} installed (pip install 'poolmon[serve]')")


def readers_for(pgbouncer: Sequence[str] = (), backends: Sequence[str] = ()) -> list[Reader]:
    """Readers for PgBouncer admin DSNs and backend DSNs/URLs (``redis://`` -> Redis)."""
    from poolmon.backends.pgbouncer import PgBouncerReader
    from poolmon.backends.postgres import PostgresReader
    from poolmon.backends.redis import RedisReader

    out: list[Reader] = []
    for dsn in pgbouncer:
        _require_driver("psycopg", "--pgbouncer")
        out.append(PgBouncerReader(dsn))
    for target in backends:
        scheme = target.partition("://")[0].lower() if "://" in target else ""
        if scheme in ("redis", "rediss", "unix"):
            _require_driver("redis", "--backend")
            out.append(RedisReader(target))
        elif scheme in ("postgresql", "postgres", "") and (scheme or "=" in target):
            _require_driver("psycopg", "--backend")
            out.append(PostgresReader(target))
        else:
            raise ConfigError(
                "--backend",
                scrub(target),
                "a PostgreSQL DSN (postgresql://... or key=value) or a Redis URL (redis://...)",
            )
    return out
