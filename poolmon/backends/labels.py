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

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from poolmon.core.redact import scrub

__all__ = [
    "APPLICATION_NAME_MAX",
    "APPLICATION_NAME_PREFIX",
    "Undo",
    "application_name",
    "label_psycopg2_pool",
    "label_psycopg_pool",
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


#: Undoes a label: puts the pool's own connect arguments back (for ``uninstrument()``).
Undo = Callable[[], None]


def _undo(pool: Any, attribute: str, original: Any) -> Undo:
    def undo() -> None:
        setattr(pool, attribute, original)

    return undo


def label_psycopg_pool(pool: Any, pool_name: str) -> Undo | None:
    """Label the connections a psycopg_pool pool opens from now on.

    Returns a function that restores the pool's own ``kwargs`` exactly (``uninstrument()`` must
    leave no trace), or None when the pool is left alone.

    For the shims, once, when they first see a pool (before it connects: ``ConnectionPool._open``
    or the first ``_connect``). psycopg_pool passes ``pool.kwargs`` (a dict, None, or a sync or
    async callable returning one, 3.3) to every ``connect(conninfo, **kwargs)``; keyword
    arguments override the conninfo's keys, so the label is added only where the conninfo and
    kwargs carry no ``fallback_application_name`` of the application's own. A callable conninfo
    cannot be inspected without calling it: such a pool is left alone. Never raises; the
    caller's kwargs object is not mutated (it may be shared by several pools).
    """
    try:
        conninfo = pool.conninfo
        if callable(conninfo):
            return None
        conninfo = conninfo or ""
        kwargs = pool.kwargs
        if not callable(kwargs):
            extra = postgres_label_kwargs(conninfo, kwargs or {}, pool_name)
            if not extra:
                return None
            pool.kwargs = {**(kwargs or {}), **extra}
        else:
            pool.kwargs = _labelled_kwargs(kwargs, conninfo, pool_name)
        return _undo(pool, "kwargs", kwargs)
    except Exception:  # observation never breaks the host: an unlabelled pool is fine
        return None


def _labelled_kwargs(kwargs: Callable[[], Any], conninfo: str, pool_name: str) -> Callable[[], Any]:
    if inspect.iscoroutinefunction(kwargs):

        async def resolve_async() -> dict[str, Any]:
            resolved = dict(await kwargs() or {})
            return {**postgres_label_kwargs(conninfo, resolved, pool_name), **resolved}

        return resolve_async

    def resolve() -> Any:
        value = kwargs()
        if isinstance(value, Awaitable):
            return value  # an async factory we did not recognise: left exactly as it was
        resolved = dict(value or {})
        return {**postgres_label_kwargs(conninfo, resolved, pool_name), **resolved}

    return resolve


def label_psycopg2_pool(pool: Any, pool_name: str) -> Undo | None:
    """Label a psycopg2.pool pool's connections from now on; the undo, or None (see above).

    psycopg2's pools call ``psycopg2.connect(*pool._args, **pool._kwargs)``; the DSN is the first
    positional argument or ``dsn=``.
    """
    try:
        original = pool._kwargs
        args, kwargs = tuple(pool._args), dict(original)
        dsn = args[0] if args else kwargs.get("dsn", "")
        extra = postgres_label_kwargs(str(dsn or ""), kwargs, pool_name)
        if not extra:
            return None
        pool._kwargs = {**kwargs, **extra}
        return _undo(pool, "_kwargs", original)
    except Exception:  # observation never breaks the host
        return None
