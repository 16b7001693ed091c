"""Pool identity: what a pool is called and what it talks to, with credentials removed.

A pool's name is given by the user or derived as ``system://host:port/namespace``. Identities are
built only from parsed, credential-free parts, so an identity can be printed, exported as labels or
written to an event log without further care.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final
from urllib.parse import unquote, urlsplit

from poolmon.core.redact import is_secret_key, remember_secret, scrub

__all__ = [
    "SYSTEMS",
    "PoolIdentity",
    "derive_name",
    "identity_from_kwargs",
    "identity_from_libpq_dsn",
    "identity_from_url",
    "server_identity",
]

#: Values of ``pool.system``. ``generic`` is for anything else (sockets, custom resources);
#: ``pgbouncer`` is a proxy pool (spec section 12), read from the proxy rather than from events.
SYSTEMS: Final = frozenset({"postgresql", "redis", "http", "sqlite", "generic", "pgbouncer"})

_DEFAULT_PORTS: Final[Mapping[str, int]] = {
    "postgresql": 5432,
    "postgres": 5432,
    "redis": 6379,
    "rediss": 6379,
    "http": 80,
    "https": 443,
}


@dataclass(frozen=True, slots=True)
class PoolIdentity:
    """Who a pool is. Every field is safe to export: no credentials, ever."""

    name: str
    system: str = "generic"
    server_address: str | None = None
    server_port: int | None = None
    namespace: str | None = None
    library: str | None = None
    library_version: str | None = None
    pid: int = field(default_factory=os.getpid)
    #: What the pool lends (spec 1.1): ``connection``, ``worker`` or ``generic``.
    resource: str = "connection"
    #: Spec 1.1: the most connections this pool may hold *together with* the other pools of the
    #: same client object (aiohttp's connector ``limit``, over all its hosts); None: no such bound.
    shared_max: int | None = None

    def with_name(self, name: str) -> PoolIdentity:
        """The same identity under another name (the registry uses it to keep names unique)."""
        return replace(self, name=name)

    def with_pid(self, pid: int) -> PoolIdentity:
        return replace(self, pid=pid)

    def as_attributes(self) -> dict[str, str]:
        """The ``pool.info`` attributes in OpenTelemetry form (absent values omitted)."""
        attrs = {"pool.name": self.name, "pool.system": self.system, "process.pid": str(self.pid)}
        if self.server_address:
            attrs["server.address"] = self.server_address
        if self.server_port is not None:
            attrs["server.port"] = str(self.server_port)
        if self.namespace:
            attrs["db.namespace"] = self.namespace
        if self.library:
            attrs["pool.library"] = self.library
        if self.library_version:
            attrs["pool.library.version"] = self.library_version
        if self.resource != "connection":  # absent means connection: 1.0 output is unchanged
            attrs["pool.resource"] = self.resource
        if self.shared_max is not None:
            attrs["pool.shared_max"] = str(self.shared_max)
        return attrs


def derive_name(
    system: str, host: str | None, port: int | None, namespace: str | None = None
) -> str:
    """``system://host:port/namespace``, the default pool name. Never contains credentials."""
    hostpart = host or "localhost"
    if ":" in hostpart and not hostpart.startswith("["):
        hostpart = f"[{hostpart}]"
    if port is not None:
        hostpart = f"{hostpart}:{port}"
    name = f"{system}://{hostpart}"
    if namespace:
        name = f"{name}/{namespace}"
    return scrub(name)


def server_identity(
    system: str,
    host: str,
    port: int | None,
    namespace: str | None = None,
    *,
    library: str | None,
    library_version: str | None,
    scheme: str | None = None,
    name: str | None = None,
) -> PoolIdentity:
    """The identity of a pool of connections to one server: named ``name`` (scrubbed), else
    ``scheme://host:port/namespace`` (``scheme`` defaults to ``system``)."""
    return PoolIdentity(
        name=scrub(name) if name else derive_name(scheme or system, host, port, namespace),
        system=system,
        server_address=host,
        server_port=port,
        namespace=namespace,
        library=library,
        library_version=library_version,
    )


def identity_from_url(
    url: str,
    *,
    name: str | None = None,
    system: str | None = None,
    library: str | None = None,
    library_version: str | None = None,
) -> PoolIdentity:
    """Identity from ``postgresql://``, ``redis://`` or ``http(s)://`` URLs; userinfo dropped."""
    parts = urlsplit(url)
    if parts.password:
        remember_secret(parts.password)
        remember_secret(unquote(parts.password))
    scheme = parts.scheme.lower()
    sys_name = system or _system_for_scheme(scheme)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    host = parts.hostname or "localhost"
    path = unquote(parts.path.lstrip("/")) or None
    namespace: str | None
    if sys_name == "http":
        namespace = None
        label_system = scheme or "http"
    else:
        namespace = path
        label_system = sys_name
    return server_identity(
        sys_name,
        host,
        port,
        namespace,
        library=library,
        library_version=library_version,
        scheme=label_system,
        name=name,
    )


def identity_from_libpq_dsn(
    dsn: str,
    kwargs: Mapping[str, object] | None = None,
    *,
    name: str | None = None,
    library: str | None = None,
    library_version: str | None = None,
) -> PoolIdentity:
    """Identity from a libpq connection string (URL or ``key=value`` form) plus keyword
    overrides."""
    if "://" in dsn:
        ident = identity_from_url(
            dsn, name=name, system="postgresql", library=library, library_version=library_version
        )
        values: dict[str, object] = {
            "host": ident.server_address,
            "port": ident.server_port,
            "dbname": ident.namespace,
        }
    else:
        values = dict(_parse_kv_dsn(dsn))
    for key, value in (kwargs or {}).items():
        if is_secret_key(key):
            remember_secret(value)
            continue
        values[key] = value
    host = str(values.get("host") or os.environ.get("PGHOST") or "localhost")
    if host.startswith("/"):
        host = "localhost"  # a Unix socket directory: report the machine, not the path
    host = host.split(",")[0]
    port = _int_or_none(values.get("port") or os.environ.get("PGPORT")) or 5432
    dbname = values.get("dbname") or values.get("database") or os.environ.get("PGDATABASE")
    namespace = str(dbname) if dbname else None
    return PoolIdentity(
        name=scrub(name) if name else derive_name("postgresql", host, port, namespace),
        system="postgresql",
        server_address=host,
        server_port=port,
        namespace=namespace,
        library=library,
        library_version=library_version,
    )


def identity_from_kwargs(
    system: str,
    kwargs: Mapping[str, object],
    *,
    name: str | None = None,
    library: str | None = None,
    library_version: str | None = None,
    default_port: int | None = None,
) -> PoolIdentity:
    """Identity from connection keyword arguments (``host``, ``port``, ``db``/``dbname``)."""
    for key, value in kwargs.items():
        if is_secret_key(key):
            remember_secret(value)
    host = kwargs.get("host") or kwargs.get("unix_socket_path") or "localhost"
    host_s = "localhost" if str(host).startswith("/") else str(host)
    port = _int_or_none(kwargs.get("port")) or default_port or _DEFAULT_PORTS.get(system)
    ns_value = kwargs.get("db", kwargs.get("dbname", kwargs.get("database")))
    namespace = None if ns_value is None else str(ns_value)
    return server_identity(
        system, host_s, port, namespace, library=library, library_version=library_version, name=name
    )


def _system_for_scheme(scheme: str) -> str:
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme in ("redis", "rediss", "unix"):
        return "redis"
    if scheme in ("http", "https"):
        return "http"
    if scheme == "sqlite":
        return "sqlite"
    return "generic"


def _int_or_none(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(str(value).split(",")[0])
    except ValueError:
        return None


def _parse_kv_dsn(dsn: str) -> dict[str, str]:
    """Parse libpq ``key=value key2='quoted value'``; credential values are remembered, not kept."""
    out: dict[str, str] = {}
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        start = i
        while i < n and dsn[i] not in "= \t\n":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            break
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        chars: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(dsn[i])
                i += 1
            i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(dsn[i])
                i += 1
        value = "".join(chars)
        if is_secret_key(key):
            remember_secret(value)
            continue
        if key:
            out[key] = value
    return out
