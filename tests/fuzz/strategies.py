"""Nasty values for flags, ``POOLMON_*`` variables and paths.

Paths are drawn as tokens (``@path:KIND``) and made real by :class:`Places` inside the test, so
the strategies can be built at import time while the files live in a per-module directory.
Nothing here can name a remote host: every URL is loopback or unusable, so no case waits on DNS
or the network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from hypothesis import strategies as st

__all__ = [
    "PATH_KINDS",
    "Places",
    "bad_float",
    "bad_int",
    "bad_urls",
    "nasty_text",
    "path_tokens",
]

#: Non-UTF-8 bytes as Python shows them in argv and the environment (surrogateescape).
NON_UTF8: Final = b"caf\xe9\xff".decode("utf-8", "surrogateescape")

_SAMPLES: Final = (
    "",
    " ",
    "\t",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "-1",
    "-0.0",
    "0",
    "1e309",
    "-1e309",
    "9" * 400,
    "abc",
    "0x10",
    "None",
    "[::1",
    "\u202e1",
    "\U0001f4a5",
    NON_UTF8,
    "a\nb",
    "x" * 100_000,
)


def _no_nul(text: str) -> bool:
    return "\x00" not in text  # a real argv or environment cannot carry NUL


#: Text of every kind a user (or a script gone wrong) can type.
nasty_text: Final = st.one_of(st.sampled_from(_SAMPLES), st.text(max_size=30).filter(_no_nul))


def _parses(text: str, kind: Callable[[str], float]) -> float | None:
    try:
        return kind(text)
    except (ValueError, OverflowError):
        return None


def bad_float(valid: Callable[[float], bool]) -> st.SearchStrategy[str]:
    """Strings that are not a float ``valid`` accepts (NaN, infinities, out of range, garbage)."""
    numbers = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-(10**30), 10**30).map(str),
    )

    def refused(text: str) -> bool:
        value = _parses(text, float)
        return value is None or not math.isfinite(value) or not valid(value)

    return st.one_of(nasty_text, numbers).filter(refused)


def bad_int(low: int, high: int) -> st.SearchStrategy[str]:
    """Strings that are not an integer in ``[low, high]``."""
    numbers = st.one_of(st.integers(-(10**30), low - 1), st.integers(high + 1, 10**30)).map(str)

    def refused(text: str) -> bool:
        value = _parses(text, int)
        return value is None or not low <= value <= high

    return st.one_of(nasty_text, numbers, st.floats().map(repr)).filter(refused)


_SCHEMES: Final = ("http://", "https://", "HTTP://", "ftp://", "file://", "", "http:/", "mailto:")
_HOSTS: Final = (
    "127.0.0.1",
    "[::1]",
    "[::1",
    "[",
    "]",
    "[zz::1]",
    "[::1]]",
    "",
    ":",
    "@",
    "u:s3cret@127.0.0.1",
    "u:s3cret@[::1",
    NON_UTF8,
    "127.0.0.1\t",
    "127.0.0.1 x",
)
_PORTS: Final = ("", ":1", ":0", ":-1", ":65536", ":99999999999999999999", ":abc", ":", ":1:2")
_PATHS: Final = ("", "/", "/metrics", "/\x7f", "/" + "a" * 5000, "/%zz", "/?q=" + NON_UTF8, "#f")


def _harmless(url: str) -> bool:
    """False for a URL that could reach a real server (a loopback port other than 0 or 1)."""
    from urllib.parse import urlsplit

    text = url if "://" in url else "http://" + url
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return True  # unusable: exactly what these URLs are for
    # Other names never resolve: the harness answers every DNS lookup with "not found".
    return parts.hostname not in ("127.0.0.1", "::1") or port in (0, 1)


#: URLs no ``top`` source can read: malformed, wrong scheme, out-of-range ports, or loopback
#: ports nobody listens on (0 and 1), never a name that needs DNS.
bad_urls: Final = st.builds(
    lambda s, h, p, path: f"{s}{h}{p}{path}",
    st.sampled_from(_SCHEMES),
    st.sampled_from(_HOSTS),
    st.sampled_from(_PORTS),
    st.sampled_from(_PATHS),
).filter(_harmless)

PATH_KINDS: Final = (
    "missing",  # does not exist, nor does its directory
    "dir",  # a directory where a file is expected
    "file",  # a regular file where a directory is expected
    "under-file",  # a path below a regular file (ENOTDIR)
    "proc",  # below /proc, where nothing can be created
    "non-utf8",  # a missing name with non-UTF-8 bytes
    "empty",  # the empty string
)


def path_tokens(*kinds: str) -> st.SearchStrategy[str]:
    return st.sampled_from([f"@path:{k}" for k in kinds])


class Places:
    """Real paths for the ``@path:KIND`` tokens, in one directory per test module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "a-dir").mkdir(exist_ok=True)
        (root / "a-file").write_text("not a directory\n")

    def resolve(self, value: str) -> str:
        if not value.startswith("@path:"):
            return value
        kind = value.removeprefix("@path:")
        return {
            "missing": str(self.root / "no-such-dir" / "no-such-file"),
            "dir": str(self.root / "a-dir"),
            "file": str(self.root / "a-file"),
            "under-file": str(self.root / "a-file" / "child"),
            "proc": "/proc/poolmon-fuzz/x",
            "non-utf8": os.path.join(str(self.root), "no-such-" + NON_UTF8),
            "empty": "",
        }[kind]
