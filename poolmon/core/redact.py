"""Secret removal: the one place every poolmon output passes through.

Pools are where applications keep their credentials. The rule of the standard is that no password,
token or URL userinfo ever reaches an event, a metric label, a log line, an OTLP payload, a terminal
view or an error message. Two mechanisms enforce it:

1. *Structural* redaction of the forms credentials come in: URL userinfo (``scheme://user:pw@host``),
   key=value DSNs (``password=...``), ``password``/``token``-like keyword arguments and
   ``Authorization``/``Proxy-Authorization`` header values.
2. *Known secrets*: whenever poolmon parses a credential (from a DSN, URL or keyword argument) it
   remembers the value in a process-local set (never written anywhere) and :func:`scrub` replaces
   any occurrence of it in free text, e.g. a driver's error message that echoes the password.

Everything that leaves poolmon as text goes through :func:`scrub`; identities are built only from
parsed, credential-free parts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "MASK",
    "SECRET_KEYS",
    "forget_secrets",
    "is_secret_key",
    "redact_dsn",
    "redact_mapping",
    "redact_url",
    "remember_secret",
    "scrub",
]

MASK: Final = "***"

#: Keyword / DSN keys whose values are credentials (compared case-insensitively, ``-`` as ``_``).
SECRET_KEYS: Final = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
        "sslpassword",
        "credential_provider",
        "authorization",
        "proxy_authorization",
        "proxy_headers",
        "sslkey",
    }
)

# Short values would match too much ordinary text; anything this short is only removed structurally.
_MIN_KNOWN_SECRET_LEN: Final = 3

_known_lock = threading.Lock()
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None

# scheme://userinfo@host — userinfo runs up to the last '@' before the path.
_URL_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s@]*(?:@[^/?#\s@]*)*)@"
)
# key=value or key='quoted value' in libpq DSNs and similar; also key: value in reprs.
# Keys ending in these words are credentials whatever their prefix (PGPASSWORD, REDIS_PASSWORD,
# client_secret, x-auth-token, db.password).
_SECRET_SUFFIXES: Final = ("password", "passwd", "secret", "token", "api_key", "apikey")
# The key may be quoted (JSON, Python reprs: 'password': 'x'), so an optional closing quote precedes
# the separator; an unquoted value stops at a quote so that scrubbing twice changes nothing.
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:[\w.-]*?(?:"
    + "|".join(_SECRET_SUFFIXES)
    + r")|"
    + "|".join(sorted(SECRET_KEYS, key=len, reverse=True))
    + r")\b)"
    r"(?P<sep>['\"]?\s*[=:]\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;)}&'\"]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<key>(?:proxy-)?authorization)(?P<sep>['\"]?\s*[:=]\s*['\"]?)(?P<value>(?:basic|bearer|digest|token)\s+[^\s'\",}]+|[^\s'\",}]+)",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """Whether a keyword/DSN key names a credential (``password``, ``token``, ...)."""
    return key.lower().replace("-", "_") in SECRET_KEYS


def remember_secret(value: object) -> None:
    """Record a credential value so :func:`scrub` removes it from any later text."""
    global _known_pattern
    if not isinstance(value, (str, bytes)):
        return
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    candidates = {text, unquote(text)}
    with _known_lock:
        added = False
        for candidate in candidates:
            if len(candidate) >= _MIN_KNOWN_SECRET_LEN and candidate not in _known:
                _known.add(candidate)
                added = True
        if added:
            alternatives = sorted(_known, key=len, reverse=True)
            _known_pattern = re.compile("|".join(re.escape(s) for s in alternatives))


def forget_secrets() -> None:
    """Drop every remembered secret (tests use this to start clean)."""
    global _known_pattern
    with _known_lock:
        _known.clear()
        _known_pattern = None


def _mask_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, sep, password = userinfo.partition(":")
    if sep:
        remember_secret(password)
        return f"{match.group('scheme')}{MASK}@"
    # A lone user part can itself be a token (https://TOKEN@host): mask it as well.
    if user:
        remember_secret(user)
    return f"{match.group('scheme')}{MASK}@"


def _mask_kv(match: re.Match[str]) -> str:
    value = match.group("value")
    # Remember the value only where it surely is a credential (key=value, or a quoted value):
    # free text like "invalid token: expired" must not teach scrub to mask every "expired".
    if value and value[0] in "'\"":
        remember_secret(value[1:-1])
    elif "=" in match.group("sep") and value != MASK:
        remember_secret(value)
    return f"{match.group('key')}{match.group('sep')}{MASK}"


def scrub(text: str) -> str:
    """Return ``text`` with every credential form and every remembered secret masked.

    Safe on any string: URLs with userinfo, libpq DSNs, ``password=...``, ``Authorization``
    headers, and any occurrence of a secret poolmon has seen before.
    """
    if not text:
        return text
    out = _URL_USERINFO.sub(_mask_userinfo, text)
    out = _AUTH_HEADER.sub(lambda m: f"{m.group('key')}{m.group('sep')}{MASK}", out)
    out = _KV_SECRET.sub(_mask_kv, out)
    pattern = _known_pattern
    if pattern is not None:
        out = pattern.sub(MASK, out)
    return out


def redact_url(url: str) -> str:
    """A URL with its userinfo removed entirely (``scheme://host:port/path``), query secrets
    masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if parts.password:
        remember_secret(parts.password)
    if parts.username and parts.password is None:
        remember_secret(parts.username)
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6 literal
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc = f"{netloc}:{port}"
    query = scrub(parts.query) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_dsn(dsn: str) -> str:
    """A connection string (URL or libpq key=value form) with credentials masked."""
    if "://" in dsn:
        return redact_url(dsn)
    return scrub(dsn)


def redact_mapping(
    values: Mapping[str, object], extra_keys: Iterable[str] = ()
) -> dict[str, object]:
    """A copy of keyword arguments with credential values replaced by :data:`MASK`."""
    extra = {k.lower() for k in extra_keys}
    out: dict[str, object] = {}
    for key, value in values.items():
        if is_secret_key(key) or key.lower() in extra:
            remember_secret(value)
            out[key] = MASK
        elif isinstance(value, str):
            out[key] = scrub(value)
        else:
            out[key] = value
    return out
