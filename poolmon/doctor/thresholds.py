"""Every number ``poolmon doctor`` judges by, in one table.

:class:`Thresholds` is that table: each field has a default, an accepted range and a one-line
meaning in its metadata, so ``docs/doctor.md`` is generated from it (:func:`markdown_table`) and
a test fails when the two drift. Override fields from a TOML file (:func:`load_toml`, a
``[thresholds]`` table or top-level keys) and from ``--set NAME=VALUE`` flags
(:func:`parse_overrides`);
a bad name or value raises :class:`~poolmon.errors.ConfigError` naming it and its range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

from poolmon.errors import ConfigError

__all__ = ["Thresholds", "load_toml", "markdown_table", "parse_overrides"]


def _t(default: float, low: float, high: float, doc: str, *, integer: bool = False) -> Any:
    return field(
        default=default, metadata={"low": low, "high": high, "doc": doc, "integer": integer}
    )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a finding fires. Seconds for durations, fractions in [0, 1] for shares."""

    # undersized
    saturation: float = _t(0.9, 0.1, 1.0, "peak used / max at or above which a pool is full")
    wait_threshold: float = _t(
        0.001, 0.00005, 30.0, "a borrow that waited longer than this (s) counts as a wait"
    )
    wait_fraction: float = _t(
        0.01, 0.0, 1.0, "share of borrows that waited, at or above which waits matter"
    )
    headroom: float = _t(1.25, 1.0, 4.0, "advised size = concurrent demand x this (Little's law)")
    wait_p95_critical: float = _t(
        0.25, 0.001, 60.0, "wait p95 (s) at or above which undersized is critical"
    )
    # oversized
    oversized_peak: float = _t(
        0.25, 0.01, 1.0, "peak used / max at or below which a pool is larger than needed"
    )
    oversized_min_max: int = _t(
        4, 2, 1_000_000, "pools with max below this are never oversized", integer=True
    )
    # storm
    storm_window: float = _t(5.0, 0.1, 3600.0, "seconds after a backend's first create")
    storm_creates: int = _t(
        20,
        2,
        1_000_000,
        "creates within storm_window, for one backend, that make a storm",
        integer=True,
    )
    # churn
    churn_ratio: float = _t(
        0.5, 0.01, 10.0, "creates / borrows at or above which there is no reuse"
    )
    overflow_fraction: float = _t(
        0.05, 0.0, 1.0, "overflow discards / returns at or above which the pool is too small"
    )
    # leak
    leak_age: float = _t(
        30.0, 0.001, 86400.0, "an outstanding borrow older than this (s) is a leak"
    )
    # slow connect
    slow_connect_p95: float = _t(
        0.01, 0.0001, 60.0, "create time p95 (s) at or above which connects are slow"
    )
    slow_connect_share: float = _t(
        0.5, 0.0, 1.0, "time creating / (creating + using) at or above which it matters"
    )
    slow_connect_ratio: float = _t(
        10.0, 0.0, 1e6, "create time p95 / mean use time at or above which connects dominate"
    )
    # silent breakage
    breakage_evictions: int = _t(
        3, 1, 1_000_000, "broken + failed-validation evictions in the window", integer=True
    )
    idle_gap: float = _t(
        30.0,
        0.001,
        86400.0,
        "quiet time (s) before a burst of breakage that points at an idle kill",
    )
    # refusals / timeouts
    refusal_fraction: float = _t(
        0.0, 0.0, 1.0, "timeouts + refusals / borrow attempts above which callers are failed"
    )
    refusal_critical: float = _t(0.01, 0.0, 1.0, "that share at or above which it is critical")
    # fleet over-commit
    backend_share: float = _t(
        0.8, 0.1, 1.0, "share of a backend's limit the fleet may hold (the rest is headroom)"
    )
    # evidence
    min_borrows: int = _t(
        20, 1, 1_000_000, "borrows a window needs before rates and ratios are judged", integer=True
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            _check(f.name, getattr(self, f.name), f.metadata)
        if self.refusal_critical < self.refusal_fraction:
            raise ConfigError(
                "refusal_critical",
                self.refusal_critical,
                f">= refusal_fraction={self.refusal_fraction}",
            )

    def with_overrides(self, values: Mapping[str, object]) -> Thresholds:
        """A copy with ``values`` applied (names checked, numbers coerced and range-checked)."""
        known = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for name, raw in values.items():
            spec = known.get(name)
            if spec is None:
                raise ConfigError(name, raw, "a threshold name: " + ", ".join(sorted(known)))
            changes[name] = _coerce(name, raw, spec.metadata)
        return replace(self, **changes)


def _range_text(meta: Mapping[str, Any]) -> str:
    kind = "an integer" if meta["integer"] else "a number"
    return f"{kind} in [{_num(meta['low'])}, {_num(meta['high'])}]"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _check(name: str, value: object, meta: Mapping[str, Any]) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and meta["integer"] and not float(value).is_integer():  # type: ignore[arg-type]
        ok = False
    if ok and not (math.isfinite(value) and meta["low"] <= value <= meta["high"]):  # type: ignore[arg-type]
        ok = False
    if not ok:
        raise ConfigError(name, value, _range_text(meta))


def _coerce(name: str, raw: object, meta: Mapping[str, Any]) -> float | int:
    value: object = raw
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(name, raw, _range_text(meta)) from None
    _check(name, value, meta)
    assert isinstance(value, (int, float))
    return int(value) if meta["integer"] else float(value)


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``["saturation=0.8", ...]`` -> ``{"saturation": "0.8"}`` (values checked later)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError("--set", item, "NAME=VALUE with NAME a threshold name")
        out[name.strip()] = value
    return out


def load_toml(path: str | Path) -> dict[str, object]:
    """The threshold values of a TOML file: a ``[thresholds]`` table, or top-level keys.

    Python 3.11+'s ``tomllib`` reads it (``tomli`` on 3.10, when installed)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                "--thresholds", str(path), "Python 3.11+ (tomllib) or the tomli package"
            ) from None
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            "--thresholds", str(path), f"a readable TOML file ({exc.strerror})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--thresholds", str(path), f"valid TOML ({exc})") from None
    table = data.get("thresholds", data)
    if not isinstance(table, dict):
        raise ConfigError("thresholds", table, "a TOML table of NAME = number")
    return dict(table)


_HEADER: Final = "| threshold | default | accepted | meaning |\n|---|---|---|---|\n"


def markdown_table() -> str:
    """The thresholds table of docs/doctor.md, generated from :class:`Thresholds`."""
    defaults = Thresholds()
    rows = []
    for f in fields(Thresholds):
        meta = f.metadata
        rows.append(
            f"| `{f.name}` | {_num(getattr(defaults, f.name))} | "
            f"{_range_text(meta)} | {meta['doc']} |"
        )
    return _HEADER + "\n".join(rows) + "\n"
