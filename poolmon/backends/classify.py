"""Poll failures sorted into the spec's poll error types (spec section 12.2).

Drivers are not imported here: exceptions are recognised by their class names along the MRO and
by the SQLSTATE psycopg attaches, so this works for whichever driver a reader uses.
"""

from __future__ import annotations

from typing import Final

__all__ = ["classify"]

_AUTH_WORDS: Final = (
    "password authentication failed",
    "authentication failed",
    "no such user",
    "wrongpass",
    "noauth",
    "invalid password",
)
_TIMEOUT_WORDS: Final = ("timeout expired", "timed out")
_CONNECT_WORDS: Final = (
    "connection refused",
    "could not connect",
    "could not translate host",
    "name or service not known",
    "no route to host",
    "connection failed",
    "server closed the connection",
    "connection reset",
    "network is unreachable",
    "closed the connection unexpectedly",
    "connection timed out",
)


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def classify(exc: BaseException) -> str:
    """``connect``, ``auth``, ``timeout``, ``query`` or ``other`` for a failed poll."""
    names = _names(exc)
    text = str(exc).lower()
    sqlstate = getattr(exc, "sqlstate", None)
    if "AuthenticationError" in names or any(w in text for w in _AUTH_WORDS):
        return "auth"
    if isinstance(sqlstate, str) and sqlstate.startswith("28"):
        return "auth"  # invalid_authorization_specification / invalid_password
    if "connection timed out" in text:
        return "connect"
    if isinstance(exc, TimeoutError) or "TimeoutError" in names or "QueryCanceled" in names:
        return "timeout"
    if any(w in text for w in _TIMEOUT_WORDS):
        return "timeout"
    if any(w in text for w in _CONNECT_WORDS):
        return "connect"
    if isinstance(exc, ConnectionError | OSError) or "ConnectionError" in names:
        return "connect"
    if "OperationalError" in names and not sqlstate:
        return "connect"  # libpq's connect failures carry no SQLSTATE
    if sqlstate or "ResponseError" in names or "ProgrammingError" in names:
        return "query"
    if isinstance(exc, ValueError | KeyError | IndexError | TypeError):
        return "query"  # a reply that did not parse
    return "other"
