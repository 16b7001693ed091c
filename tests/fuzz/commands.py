"""What each ``poolmon`` command must refuse, and how: the fuzz suite's table.

A :class:`CommandSpec` gives a command's base arguments (chosen so that a value wrongly accepted
ends quickly and offline, and the test then fails on the exit status rather than hanging) and its
parameters, each with a strategy of values it must not accept:

* ``usage`` parameters must be refused with exit status 2 and one stderr line naming them;
* ``source`` parameters (``top``'s URLs and logs) must leave that source shown as down with its
  reason while the other sources carry on.

A new command joins the suite with one entry in :data:`COMMANDS`
(``test_every_command_is_in_the_table`` fails until it has one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import urlsplit

from hypothesis import strategies as st

from tests.fuzz.strategies import (
    bad_float,
    bad_int,
    bad_urls,
    nasty_text,
    path_tokens,
)

__all__ = ["COMMANDS", "CommandSpec", "Param", "all_params"]


@dataclass(frozen=True, repr=False)
class Param:
    #: ``--flag`` (given as ``--flag=VALUE``), ``POOLMON_*`` (an environment variable) or a
    #: positional's metavar (``FILE``, ``URL``): also what the error line must name.
    name: str
    bad: st.SearchStrategy[str]
    outcome: Literal["usage", "source"] = "usage"
    #: Other spellings the error may use for it.
    also: tuple[str, ...] = ()
    #: Environment the case needs to make the parameter matter (e.g. the exporter it configures).
    env: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"Param({self.name!r})"

    @property
    def is_env(self) -> bool:
        return self.name.startswith("POOLMON_")

    @property
    def is_positional(self) -> bool:
        return not self.name.startswith("-") and not self.is_env


@dataclass(frozen=True, repr=False)
class CommandSpec:
    name: str
    #: Arguments before the fuzzed one.
    head: tuple[str, ...]
    params: tuple[Param, ...]
    #: Arguments after the fuzzed one (``-- true`` for ``run``).
    tail: tuple[str, ...] = ()
    #: Documented exit status of a usage error.
    usage_status: int = 2
    env: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CommandSpec({self.name!r})"


_EXPORTERS: Final = frozenset({"prometheus", "otlp", "jsonl"})
_BAD_ADDRS: Final = ("not an address", "a/b", "[::1", "::1::2", "@", "x" * 300, "127.0.0.1:80")
_BOOLS: Final = frozenset({"1", "true", "yes", "on", "0", "false", "no", "off", ""})


def _set(text: str) -> bool:
    return bool(text.strip())


def _exporters_ok(text: str) -> bool:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    return bool(names) and all(n in _EXPORTERS for n in names)


def _unusable_endpoint(url: str) -> bool:
    """True for an OTLP endpoint no exporter can use (the empty string means "not set")."""
    if not url.strip():
        return False
    text = url if "://" in url else "http://" + url
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018
    except ValueError:
        return True
    if any(c.isspace() or not c.isprintable() for c in url):
        return True
    return parts.scheme not in ("http", "https") or not parts.hostname


_interval = bad_float(lambda v: 0.1 <= v <= 3600)

COMMANDS: Final[tuple[CommandSpec, ...]] = (
    CommandSpec(
        "demo",
        # Accepted by mistake, the demo would run for 10 ms on a free port and exit 0.
        ("demo", "--no-tui", "--port=0", "--duration=0.01", "--phase-seconds=0.5"),
        (
            Param("--duration", bad_float(lambda v: v > 0)),
            Param("--port", bad_int(0, 65535)),
            Param("--phase-seconds", bad_float(lambda v: 0.2 <= v <= 3600)),
            Param("--interval", _interval),
        ),
    ),
    CommandSpec(
        "top",
        # Always one source given: the default (127.0.0.1:9464) may be someone's real demo.
        ("top", "--once", "--json", "--timeout=1", "http://127.0.0.1:1/closed"),
        (
            Param("--interval", _interval),
            Param("--timeout", bad_float(lambda v: 0 < v <= 300)),
            Param("--sort", nasty_text),
            Param("--window", nasty_text.filter(lambda t: not t[:1].isdigit())),
            Param("URL", bad_urls, outcome="source"),
            Param("--prometheus", bad_urls, outcome="source"),
            Param(
                "--replay",
                path_tokens("missing", "dir", "under-file", "non-utf8", "proc", "empty"),
                outcome="source",
            ),
        ),
    ),
    CommandSpec(
        "run",
        ("run",),
        (
            Param("--exporter", nasty_text.filter(lambda t: not _exporters_ok(t))),
            Param("--port", bad_int(0, 65535)),
            Param("--addr", st.sampled_from(_BAD_ADDRS)),
            Param("--jsonl", path_tokens("dir", "under-file", "missing", "proc")),
            Param("--otlp-endpoint", bad_urls.filter(_unusable_endpoint)),
            Param("--leak-threshold", bad_float(lambda v: v > 0)),
            Param("--info-file", path_tokens("dir", "under-file", "missing", "proc")),
            # In the environment an empty value means "not set" (the default applies).
            Param(
                "POOLMON_EXPORTERS", nasty_text.filter(lambda t: _set(t) and not _exporters_ok(t))
            ),
            Param("POOLMON_PROMETHEUS_PORT", bad_int(0, 65535).filter(_set)),
            Param("POOLMON_PROMETHEUS_ADDR", st.sampled_from(_BAD_ADDRS)),
            Param("POOLMON_LEAK_THRESHOLD", bad_float(lambda v: v > 0).filter(_set)),
            Param("POOLMON_SEMCONV", nasty_text.filter(lambda t: t.strip().lower() not in _BOOLS)),
            Param("POOLMON_OTLP_ENDPOINT", bad_urls.filter(_unusable_endpoint)),
            Param(
                "POOLMON_JSONL_PATH",
                path_tokens("dir", "under-file", "missing", "proc"),
                env=(("POOLMON_EXPORTERS", "jsonl"),),
            ),
        ),
        tail=("--", "true"),
    ),
    CommandSpec(
        "spec validate",
        ("spec", "validate"),
        (Param("FILE", path_tokens("missing", "dir", "under-file", "non-utf8", "empty")),),
    ),
    CommandSpec(
        "doctor",
        # Accepted by mistake, doctor reads one closed port (down) and exits quickly.
        ("doctor", "--timeout=1", "http://127.0.0.1:1/closed"),
        (
            Param("--window", nasty_text.filter(lambda t: not t[:1].isdigit())),
            Param("--timeout", bad_float(lambda v: 0 < v <= 300)),
            Param("--saturation", bad_float(lambda v: 0 < v <= 1)),
            Param("--headroom", bad_float(lambda v: v >= 1)),
            Param("--limit", nasty_text.filter(lambda t: "=" not in t)),
            Param("--thresholds", path_tokens("missing", "dir", "non-utf8", "proc")),
        ),
    ),
    CommandSpec(
        "serve",
        # Accepted by mistake, serve polls nothing once and exits.
        ("serve", "--once"),
        (
            Param("--interval", bad_float(lambda v: 0 < v <= 86400)),
            Param("--port", bad_int(0, 65535)),
            Param("--duration", bad_float(lambda v: v > 0)),
            Param("--addr", st.sampled_from(_BAD_ADDRS)),
            Param("--backend", nasty_text.filter(lambda t: "://" not in t and "=" not in t)),
        ),
    ),
    CommandSpec(
        "dashboards build",
        ("dashboards", "build"),
        (Param("--output", path_tokens("file", "under-file", "proc", "empty")),),
    ),
)


def all_params() -> list[tuple[CommandSpec, Param]]:
    return [(spec, param) for spec in COMMANDS for param in spec.params]
