"""A backend's real connection limit, for the fleet over-commit finding.

* PostgreSQL (``postgresql://...`` or a ``key=value`` DSN): ``SHOW max_connections`` minus
  ``superuser_reserved_connections`` (and ``reserved_connections`` on PostgreSQL 16+), what an
  ordinary role can really open;
* Redis (``redis://``, ``rediss://``, ``unix://``): ``CONFIG GET maxclients``;
* postgres_exporter / redis_exporter series in Prometheus (:func:`limits_from_prometheus`);
* ``backend_connection_limit`` minus ``backend_connection_reserved``, the series ``poolmon
  serve`` polls from the backend itself (spec section 12.2), on a /metrics page or in
  Prometheus (:func:`limits_from_backend_samples`, :func:`limits_from_prometheus`);
* ``--limit HOST:PORT=N`` (:func:`parse_limit`).

Errors never carry the DSN's password: messages pass :func:`poolmon.core.redact.scrub`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from poolmon.core.redact import redact_dsn, redact_url, scrub
from poolmon.doctor.model import BackendLimit
from poolmon.errors import ConfigError, PoolmonError

__all__ = [
    "BackendError",
    "limits_from_backend_samples",
    "limits_from_prometheus",
    "parse_limit",
    "read_limit",
]


class BackendError(PoolmonError):
    """A backend's limit could not be read; ``target`` is the credential-free address."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        super().__init__(scrub(f"{target}: {reason}"))


def read_limit(target: str, *, timeout: float = 5.0) -> BackendLimit:
    """Connect to ``target`` and read its limit. Raises :class:`BackendError`."""
    if target.startswith(("redis://", "rediss://", "unix://")):
        return _redis_limit(target, timeout)
    return _postgres_limit(target, timeout)


def _postgres_limit(dsn: str, timeout: float) -> BackendLimit:
    shown = redact_url(dsn) if "://" in dsn else redact_dsn(dsn)
    try:
        import psycopg
    except ImportError:
        raise BackendError(
            shown, "reading PostgreSQL needs psycopg (pip install psycopg)"
        ) from None
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout)), autocommit=True) as conn:
            settings = {
                row[0]: row[1]
                for row in conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('max_connections', 'superuser_reserved_connections', 'reserved_connections')"
                )
            }
            host, port = conn.info.host, conn.info.port
    except Exception as exc:
        raise BackendError(shown, f"{type(exc).__name__}: {str(exc).strip()}") from None
    total = int(settings["max_connections"])
    reserved = int(settings.get("superuser_reserved_connections", 0)) + int(
        settings.get("reserved_connections", 0)
    )
    origin = f"max_connections {total} - {reserved} reserved, read from {shown}"
    return BackendLimit("postgresql", _hostport(host, port), total - reserved, origin)


def _redis_limit(url: str, timeout: float) -> BackendLimit:
    shown = redact_url(url)
    try:
        import redis
    except ImportError:
        raise BackendError(shown, "reading Redis needs redis-py (pip install redis)") from None
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            reply: Any = client.config_get("maxclients")
            kwargs = client.connection_pool.connection_kwargs
        finally:
            client.close()
    except Exception as exc:
        raise BackendError(shown, f"{type(exc).__name__}: {str(exc).strip()}") from None
    limit = int(reply["maxclients"])
    host = str(kwargs.get("host", "127.0.0.1"))
    port = kwargs.get("port", 6379)
    return BackendLimit("redis", _hostport(host, port), limit, f"maxclients, read from {shown}")


def _hostport(host: str, port: object) -> str:
    if host.startswith("/"):
        return host
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def parse_limit(text: str) -> BackendLimit:
    """``HOST:PORT=N`` (or ``SYSTEM://HOST:PORT=N``) -> a limit."""
    target, sep, number = text.rpartition("=")
    system = ""
    if "://" in target:
        system, _, target = target.partition("://")
    try:
        limit = int(number)
    except ValueError:
        limit = -1
    if not sep or not target or limit < 1:
        raise ConfigError("--limit", text, "HOST:PORT=N with N an integer >= 1")
    host, _, port = target.rpartition(":")
    backend = _hostport(host, port) if host else target
    return BackendLimit(system, backend, limit, "--limit")


def limits_from_prometheus(
    query: Callable[[str], Sequence[Mapping[str, Any]]],
) -> list[BackendLimit]:
    """Limits from postgres_exporter (``pg_settings_max_connections`` minus the reserved ones)
    and redis_exporter (``redis_config_maxclients``) series; the backend is the ``server``
    label when present (postgres_exporter), else the target in ``instance``."""
    out: list[BackendLimit] = []
    polled: dict[tuple[str, str], float] = {}
    for item in query("backend_connection_reserved"):
        labels = item["metric"]
        polled[(labels.get("backend_name", ""), labels.get("backend_system", ""))] = float(
            item["value"][1]
        )
    for item in query("backend_connection_limit"):
        labels = item["metric"]
        name, system = labels.get("backend_name", ""), labels.get("backend_system", "")
        if system == "pgbouncer" or not name:
            continue
        out.append(_polled(system, name, float(item["value"][1]), polled.get((name, system))))
    reserved: dict[str, float] = {}
    for item in query("pg_settings_superuser_reserved_connections"):
        reserved[_target(item["metric"])] = float(item["value"][1])
    for item in query("pg_settings_max_connections"):
        backend = _target(item["metric"])
        total = float(item["value"][1])
        less = reserved.get(backend, 0.0)
        origin = f"pg_settings_max_connections {total:g} - {less:g} reserved (Prometheus)"
        out.append(BackendLimit("postgresql", backend, int(total - less), origin))
    for item in query("redis_config_maxclients"):
        backend = _target(item["metric"])
        out.append(
            BackendLimit(
                "redis",
                backend,
                int(float(item["value"][1])),
                "redis_config_maxclients (Prometheus)",
            )
        )
    return out


def limits_from_backend_samples(samples: Sequence[Any]) -> list[BackendLimit]:
    """Limits from the backends ``poolmon serve`` polls (``poolmon.top.capacity.BackendSample``
    read off a /metrics page): what the backend itself says, less its reserved connections."""
    out: list[BackendLimit] = []
    for sample in samples:
        if sample.up and sample.limit is not None and sample.system != "pgbouncer":
            out.append(_polled(sample.system, sample.name, sample.limit, sample.reserved))
    return out


def _polled(system: str, name: str, limit: float, reserved: float | None) -> BackendLimit:
    less = reserved or 0.0
    origin = f"backend_connection_limit {limit:g} - {less:g} reserved (poolmon serve)"
    return BackendLimit(system, _target({"instance": name}), int(limit - less), origin)


def _target(labels: Mapping[str, str]) -> str:
    target = labels.get("server") or labels.get("addr") or labels.get("instance", "")
    if "://" in target:
        target = target.split("://", 1)[1]
    target = target.rsplit("@", 1)[-1].split("/", 1)[0]
    host, _, port = target.rpartition(":")
    return _hostport(host, port) if host else target
