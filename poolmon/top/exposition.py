"""Reading the Prometheus text exposition fast enough for 1,000 pools at 1 Hz.

``prometheus_client.parser`` is the reference parser, but it costs ~30 us per line here: a
1,000-pool ``/metrics`` page has ~150,000 lines, several seconds of CPU per refresh. This module
keeps it only as the fallback and does two cheap things first:

1. lines whose metric name ``top`` does not read are skipped with one ``str.startswith`` on a
   tuple of prefixes (most of the page: use-time and lifetime histograms, validations, ...);
2. the remaining lines in the canonical form every client library writes
   (``name{a="x",b="y"} value [timestamp]``) are split by hand, with the label block's parse
   cached by its exact text, because the same label sets come back on every refresh.

A line the fast path cannot read exactly (escaped quotes or backslashes in a label value, a
malformed line) goes to ``prometheus_client.parser``; a line that one rejects as well is dropped,
so one bad series never hides the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final

__all__ = ["MAX_PROBLEMS", "ExpositionParser", "Triple", "parse_exposition"]

_LABEL: Final = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"([^"\\]*)"\s*,?')
_CACHE_LIMIT: Final = 500_000

Triple = tuple[str, Mapping[str, str], float]


class ExpositionParser:
    """A reusable parser: keeps the label-block cache between refreshes of one source.

    Not thread-safe; give each source its own.
    """

    __slots__ = ("_labels", "_wanted", "problems")

    def __init__(self, wanted: tuple[str, ...] | None = None) -> None:
        self._wanted = wanted
        self._labels: dict[str, Mapping[str, str] | None] = {}
        #: ``(line number, line)`` of the wanted lines the last :meth:`parse` had to drop
        #: (``poolmon doctor`` names them); at most :data:`MAX_PROBLEMS` are kept.
        self.problems: list[tuple[int, str]] = []

    def parse(self, text: str) -> Iterator[Triple]:
        """Yield ``(sample name, labels, value)`` for every wanted sample of ``text``."""
        wanted = self._wanted
        cache = self._labels
        if len(cache) > _CACHE_LIMIT:
            cache.clear()  # bounded memory when label sets churn (pools come and go)
        problems = self.problems = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line or line[0] == "#":
                continue
            if wanted is not None and not line.startswith(wanted):
                continue
            brace = line.find("{")
            if brace < 0:
                parts = line.split()
                if len(parts) < 2:
                    yield from _fallback(line, wanted, number, problems)
                    continue
                name, labels, rest = parts[0], _EMPTY, parts[1]
            else:
                close = line.rfind("}")
                block = line[brace + 1 : close]
                try:
                    labels = cache[block]  # type: ignore[assignment]
                except KeyError:
                    labels = cache[block] = _parse_labels(block)  # type: ignore[assignment]
                if labels is None or close < brace:
                    yield from _fallback(line, wanted, number, problems)
                    continue
                name = line[:brace].rstrip()
                rest = line[close + 1 :].split(None, 1)[0] if close + 1 < len(line) else ""
            if wanted is not None and name not in wanted:
                continue  # a longer name sharing a wanted prefix (``..._total`` vs ``..._totals``)
            try:
                value = float(rest)
            except ValueError:
                yield from _fallback(line, wanted, number, problems)
                continue
            yield name, labels, value


_EMPTY: Final[Mapping[str, str]] = {}


def _parse_labels(block: str) -> Mapping[str, str] | None:
    """Labels of a block without escapes; ``None`` when the fast path cannot be exact."""
    if "\\" in block:
        return None
    out: dict[str, str] = {}
    pos = 0
    end = len(block)
    while pos < end:
        match = _LABEL.match(block, pos)
        if match is None:
            if block[pos:].strip():
                return None
            break
        out[match.group(1)] = match.group(2)
        pos = match.end()
    return out


MAX_PROBLEMS: Final = 20


def _fallback(
    line: str, wanted: tuple[str, ...] | None, number: int, problems: list[tuple[int, str]]
) -> Iterator[Triple]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(line + "\n"))
    except Exception:  # the reference parser rejects it too: drop this one line
        if len(problems) < MAX_PROBLEMS:
            problems.append((number, line[:200]))
        return
    for family in families:
        for sample in family.samples:
            if wanted is None or sample.name in wanted:
                yield sample.name, dict(sample.labels), float(sample.value)


def parse_exposition(text: str, wanted: tuple[str, ...] | None = None) -> list[Triple]:
    """Parse ``text`` once (no cache kept); see :class:`ExpositionParser`."""
    return list(ExpositionParser(wanted).parse(text))
