"""A small PromQL scanner: enough to lint dashboard and rule queries without a PromQL parser.

It finds metric names (and whether each sits inside ``rate``/``irate``/``increase``) and the range
each of those functions uses. Real parsing is left to Prometheus: tests run every query through
``promtool`` and a live server; this scanner only enforces the house rules the parser cannot know.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "RATE_FUNCTIONS",
    "MetricUse",
    "RateUse",
    "Scan",
    "scan",
    "substitute",
]

RATE_FUNCTIONS: Final = frozenset({"rate", "irate", "increase"})
_KEYWORDS: Final = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        # Aggregation operators may be followed by `by (...)` before their parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
#: Parenthesised lists after these words hold label names, not metrics.
_LABEL_LISTS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


@dataclass(frozen=True, slots=True)
class MetricUse:
    name: str
    in_rate: bool


@dataclass(frozen=True, slots=True)
class RateUse:
    function: str
    range: str | None  # the text between [ and ], None when the call has no range selector


@dataclass(slots=True)
class Scan:
    metrics: list[MetricUse] = field(default_factory=list)
    rates: list[RateUse] = field(default_factory=list)

    @property
    def metric_names(self) -> set[str]:
        return {m.name for m in self.metrics}

    def counters_outside_rate(self, counters: Collection[str] = ()) -> list[str]:
        """Metric names used bare although they are counters.

        A name counts as a counter when it is in ``counters`` or ends with ``_total`` (a suffix
        test alone would flag gauges such as ``pool_connection_usage``).
        """
        return [
            m.name
            for m in self.metrics
            if not m.in_rate and (m.name in counters or m.name.endswith("_total"))
        ]


@dataclass(slots=True)
class _Frame:
    name: str
    last_range: str | None = None


def _ident_end(expr: str, i: int) -> int:
    while i < len(expr) and (expr[i].isalnum() or expr[i] in "_:"):
        i += 1
    return i


def _skip_quoted(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while i < len(expr) and expr[i] != quote:
        i += 2 if expr[i] == "\\" else 1
    return i + 1


def _skip_braces(expr: str, i: int) -> int:
    while i < len(expr) and expr[i] != "}":
        i = _skip_quoted(expr, i) if expr[i] in "\"'`" else i + 1
    return i + 1


def scan(expr: str) -> Scan:
    """Scan one PromQL expression (template variables may be left in place)."""
    result = Scan()
    stack: list[_Frame] = []
    pending_call: str | None = None
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch in "\"'`":
            i = _skip_quoted(expr, i)
        elif ch == "{":
            i = _skip_braces(expr, i + 1)
        elif ch == "[":
            end = expr.index("]", i)
            if stack:
                stack[-1].last_range = expr[i + 1 : end]
            i = end + 1
        elif ch == "(":
            stack.append(_Frame(pending_call or ""))
            pending_call = None
            i += 1
        elif ch == ")":
            frame = stack.pop()
            if frame.name in RATE_FUNCTIONS:
                result.rates.append(RateUse(frame.name, frame.last_range))
            i += 1
        elif ch == "$":
            i = _ident_end(expr, i + 1)  # a template variable such as $__rate_interval
        elif ch.isdigit() or (ch == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i = _number_end(expr, i + 1)
        elif ch.isalpha() or ch in "_:":
            i, called = _word(expr, i, stack, result)
            pending_call = called or pending_call
        else:
            i += 1
    return result


def _number_end(expr: str, i: int) -> int:
    """The end of a number literal whose first character is before ``i`` (exponents too)."""
    while i < len(expr) and (
        expr[i].isalnum() or expr[i] == "." or (expr[i] in "+-" and expr[i - 1] in "eE")
    ):
        i += 1
    return i


def _word(expr: str, i: int, stack: list[_Frame], result: Scan) -> tuple[int, str | None]:
    """The identifier at ``i``: its end, and its name if a call follows (else None; a metric
    name outside a label list is recorded in ``result``)."""
    end = _ident_end(expr, i)
    word = expr[i:end]
    j = end
    while j < len(expr) and expr[j].isspace():
        j += 1
    if j < len(expr) and expr[j] == "(":
        return end, word
    in_label_list = bool(stack) and stack[-1].name in _LABEL_LISTS
    if word.lower() not in _KEYWORDS and not in_label_list:
        in_rate = any(f.name in RATE_FUNCTIONS for f in stack)
        result.metrics.append(MetricUse(word, in_rate))
    return end, None


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana template variables (``$name`` and ``${name}``), longest names first."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr
