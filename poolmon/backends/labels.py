"""Labels a client puts on the connections it opens, so a backend's view can name their pool.

PostgreSQL: libpq's ``fallback_application_name`` is exactly "an application_name only when the
application set none": libpq uses it only when neither the connection string, the keyword
arguments nor ``PGAPPNAME`` give an ``application_name`` (PostgreSQL docs, "Parameter Key
Words"). So adding it never overrides a name the application chose and changes nothing else about
the connection. The shims call :func:`postgres_label_kwargs` once per pool and merge the result
into the keyword arguments the pool passes to every connect (spec section 12.2).

Redis: redis-py already sends ``CLIENT SETINFO lib-name``; nothing to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from poolmon.core.redact import scrub

__all__ = [
    "APPLICATION_NAME_MAX",
    "APPLICATION_NAME_PREFIX",
    "application_name",
    "pool_of_application_name",
    "postgres_label_kwargs",
]

#: PostgreSQL keeps ``NAMEDATALEN - 1`` = 63 bytes of an application_name (it truncates silently).
APPLICATION_NAME_MAX: Final = 63
#: What poolmon's labels start with, so the backend view can tell them from the application's own.
APPLICATION_NAME_PREFIX: Final = "poolmon "
_KEY: Final = "fallback_application_name"


def application_name(pool_name: str) -> str:
    """The ``application_name`` for connections of pool ``pool_name``: ``poolmon NAME``.

    Secrets removed (a user-given name could hold one), printable ASCII only (PostgreSQL replaces
    anything else with ``?``), at most 63 bytes. A name too long keeps its end, which is what
    tells pools of one server apart (``.../orders`` vs ``.../billing``), behind a ``~``.
    """
    text = scrub(pool_name)
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    room = APPLICATION_NAME_MAX - len(APPLICATION_NAME_PREFIX)
    if len(text) > room:
        text = "~" + text[-(room - 1) :]
    return APPLICATION_NAME_PREFIX + text


def pool_of_application_name(value: str) -> str | None:
    """The pool name a label of :func:`application_name` carries (None: not poolmon's label)."""
    if not value.startswith(APPLICATION_NAME_PREFIX):
        return None
    return value[len(APPLICATION_NAME_PREFIX) :] or None


def _conninfo_has_key(conninfo: str, key: str) -> bool:
    # Both libpq forms: key=value words and URL query parameters (?key=... / &key=...).
    if "://" in conninfo:
        query = conninfo.partition("?")[2]
        return any(part.partition("=")[0] == key for part in query.split("&"))
    return key in conninfo.replace("=", " = ").split()


def postgres_label_kwargs(
    conninfo: str, kwargs: Mapping[str, object], pool_name: str
) -> dict[str, str]:
    """Keyword arguments to add to a pool's connects: ``{"fallback_application_name": ...}``.

    Empty when the application already gave a ``fallback_application_name`` itself (in
    ``conninfo`` or ``kwargs``): its own fallback wins. An explicit ``application_name`` needs no
    check here, libpq already prefers it over any fallback.
    """
    if _KEY in kwargs or _conninfo_has_key(conninfo, _KEY):
        return {}
    return {_KEY: application_name(pool_name)}
