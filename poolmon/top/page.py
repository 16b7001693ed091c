"""Reading a whole ``/metrics`` page into pool samples, fast enough for 1,000 pools at 1 Hz.

A 1,000-pool page is ~130,000 lines; ``prometheus_client.parser`` needs ~30 us a line here, and
even a hand-written per-line loop ~3 us. So Python-level work is moved from lines to *pools*:

1. the page is cut into families at its ``# TYPE`` lines (``str.find``, C speed) and families
   ``top`` does not read are skipped whole (use-time and lifetime histograms, ...);
2. each kept family becomes two lists, series and values (``str.split`` and ``str.rsplit``
   mapped in C); the create-time histogram, whose buckets ``top`` ignores, contributes only its
   ``_count`` lines, found with ``str.find``;
3. a *plan* per family says which slice of the values goes to which pool field (a pool's eleven
   eviction reasons are one ``dict(zip(reasons, values[a:b]))``). Plans are rebuilt only when
   a family's list of series differs from the previous page's (a pool came or went), a list
   comparison done in C; a family whose values did not change is skipped altogether;
4. only pools whose fields changed get a new :class:`PoolSample`.

Anything unusual (no ``# TYPE`` lines, a value that is not a number) falls back to the line
parser in :mod:`poolmon.top.exposition`, correct but slower.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from typing import Final

from poolmon.top.exposition import ExpositionParser, _parse_labels
from poolmon.top.samples import (
    CREATE_COUNT_METRIC,
    WANTED_METRICS,
    PoolAccumulator,
    PoolSample,
    SampleBuilder,
    build_sample,
    field_for,
)

__all__ = ["PageReader"]

_SPACE: Final = itertools.repeat(" ")
_HEAD: Final = operator.itemgetter(0)
_VALUE: Final = operator.itemgetter(-1)
_POOL: Final = "pool_name"
_HEAD_CACHE_LIMIT: Final = 500_000

# Plan steps. A plain value: (pool, attribute, index). A keyed run: (pool, attribute, keys,
# start, stop) -> attribute = dict(zip(keys, values[start:stop])).
_Scalar = tuple[str, str, int]
_Run = tuple[str, str, tuple[object, ...], int, int]


def _family_of(sample: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if sample.endswith(suffix):
            return sample[: -len(suffix)]
    return sample


class _Plan:
    """Where each value of one family goes, valid while the family's series stay the same."""

    __slots__ = ("heads", "order", "pools", "runs", "scalars", "section")

    def __init__(self, heads: list[str]) -> None:
        self.heads = heads
        self.section = ""  # the previous page's text of this family (skip it if unchanged)
        self.scalars: list[_Scalar] = []
        self.runs: list[_Run] = []
        self.pools: set[str] = set()
        self.order: list[str] = []  # pools in page order

    def add_pool(self, pool: str) -> None:
        if pool not in self.pools:
            self.pools.add(pool)
            self.order.append(pool)


class PageReader:
    """Turns successive pages of one endpoint into samples. Keeps plans between pages; not
    thread-safe (one per source)."""

    def __init__(self, wanted: tuple[str, ...] = WANTED_METRICS) -> None:
        self._families = frozenset(wanted) | {_family_of(w) for w in wanted}
        # The create-time family is read sparsely (its _count lines) unless its buckets are wanted.
        self._sparse = frozenset({_SPARSE_FAMILY}) - {
            _family_of(w) for w in wanted if w.endswith("_bucket")
        }
        self._wanted = wanted
        self._wanted_names = frozenset(wanted)
        self._blocks: dict[str, Mapping[str, str]] = {}
        self._line_parser = ExpositionParser(wanted)
        self._heads: dict[str, tuple[str, Mapping[str, str]] | None] = {}
        self._plans: dict[str, _Plan] = {}
        self._accs: dict[str, PoolAccumulator] = {}
        self._samples: dict[str, PoolSample] = {}
        self._order: tuple[str, ...] = ()

    def read(self, text: str) -> tuple[PoolSample, ...]:
        sections = _split_families(text, self._families)
        if sections is None:
            return self._read_slowly(text)
        try:
            return self._read(sections)
        except ValueError:  # a value that is not a number: let the line parser sort it out
            return self._read_slowly(text)

    @property
    def problems(self) -> list[tuple[int, str]]:
        """``(line number, line)`` of the lines the last page could not read (slow path only)."""
        return self._line_parser.problems

    def _read_slowly(self, text: str) -> tuple[PoolSample, ...]:
        self._plans.clear()
        builder = SampleBuilder(self._wanted)
        builder.add_all(self._line_parser.parse(text))
        return builder.build()

    def _read(self, sections: dict[str, str]) -> tuple[PoolSample, ...]:
        self._line_parser.problems = []
        plans = self._plans
        relayout = sections.keys() != plans.keys()
        series: dict[str, tuple[list[str], list[str]]] = {}
        for family, section in sections.items():
            plan = plans.get(family)
            if plan is not None and plan.section == section:
                continue  # byte for byte the previous page's family: nothing to do
            heads, values = series[family] = _series(family, section, self._sparse)
            if plan is None or plan.heads != heads:
                relayout = True
        if relayout:
            # A pool (or a family) came or went: plan every family afresh against fresh
            # accumulators, so nothing of a vanished series survives.
            for family, section in sections.items():
                if family not in series:
                    series[family] = _series(family, section, self._sparse)
            self._accs = {}
            self._samples = {}
            plans = self._plans = {f: self._plan(heads) for f, (heads, _) in series.items()}
            self._order = tuple(dict.fromkeys(p for plan in plans.values() for p in plan.order))
        dirty: set[str] = set()
        accs = self._accs
        for family, (_, values) in series.items():
            plan = plans[family]
            numbers = list(map(float, values))
            for pool, attr, index in plan.scalars:
                setattr(accs[pool], attr, numbers[index])
            for pool, attr, keys, start, stop in plan.runs:
                setattr(accs[pool], attr, dict(zip(keys, numbers[start:stop], strict=True)))
            plan.section = sections[family]
            dirty |= plan.pools
        samples = self._samples
        for pool in dirty:
            samples[pool] = build_sample(pool, accs[pool])
        return tuple(samples[p] for p in self._order if p in samples)

    def _head(self, head: str) -> tuple[str, Mapping[str, str]] | None:
        cache = self._heads
        try:
            return cache[head]
        except KeyError:
            pass
        if len(cache) > _HEAD_CACHE_LIMIT:
            cache.clear()
            self._blocks.clear()
        parsed = None
        if head.endswith("}"):  # else a comment, or a line carrying a timestamp
            brace = head.find("{")
            name = head[:brace]
            if name not in self._wanted_names:
                cache[head] = None  # an unread sample of a read family (a histogram's _count)
                return None
            # Label blocks repeat across families (a pool's bucket bounds in four histograms):
            # parse each block once; one with escapes goes to the exact line parser.
            block = head[brace + 1 : -1]
            labels = self._blocks.get(block)
            if labels is None:
                labels = _parse_labels(block)
                if labels is not None:
                    self._blocks[block] = labels
            if labels is not None:
                parsed = (name, labels)
            else:
                for name, labels, _ in self._line_parser.parse(head + " 0"):
                    parsed = (name, labels)
        cache[head] = parsed
        return parsed

    def _acc(self, pool: str) -> PoolAccumulator:
        acc = self._accs.get(pool)
        if acc is None:
            acc = self._accs[pool] = PoolAccumulator()
        return acc

    def _plan(self, heads: list[str]) -> _Plan:
        plan = _Plan(heads)
        i, n = 0, len(heads)
        while i < n:
            parsed = self._head(heads[i])
            pool = None if parsed is None else parsed[1].get(_POOL)
            target = None if parsed is None or pool is None else field_for(*parsed)
            if parsed is None and heads[i].partition("{")[0] in self._wanted_names:
                raise ValueError("a wanted series the fast path cannot read")  # -> line parser
            if parsed is None or pool is None or target is None:
                i += 1
                continue
            name, labels = parsed
            attr, key = target
            acc = self._acc(pool)
            plan.add_pool(pool)
            if key is None:
                if attr == "info":
                    acc.info = labels  # labels never change without the series changing
                else:
                    plan.scalars.append((pool, attr, i))
                i += 1
                continue
            # A run of consecutive series of one keyed field of one pool (exporters write a
            # pool's reasons or buckets together); a run of one is fine too.
            keys: list[object] = []
            j = i
            while j < n:
                nxt = self._head(heads[j])
                if nxt is None or nxt[0] != name or nxt[1].get(_POOL) != pool:
                    break
                nxt_target = field_for(*nxt)
                if nxt_target is None:
                    break
                keys.append(nxt_target[1])
                j += 1
            plan.runs.append((pool, attr, tuple(keys), i, j))
            i = j
        return plan


def _split_families(text: str, wanted: frozenset[str]) -> dict[str, str] | None:
    """``{family: its lines}`` for the wanted families; None without ``# TYPE`` lines."""
    starts: list[int] = []
    pos = 0 if text.startswith("# TYPE ") else text.find("\n# TYPE ")
    while pos >= 0:
        start = pos if text.startswith("# TYPE ", pos) else pos + 1
        starts.append(start)
        pos = text.find("\n# TYPE ", start + 1)
    if not starts:
        return None
    starts.append(len(text))
    out: dict[str, str] = {}
    for begin, end in itertools.pairwise(starts):
        family = text[begin + 7 : text.find(" ", begin + 7)]
        if family not in wanted:
            continue
        # From the end of the TYPE line; the next family's HELP line at the end parses as
        # nothing (comments are dropped by _series).
        body_start = text.find("\n", begin, end)
        if body_start >= 0:
            out[family] = text[body_start:end]
    return out


_SPARSE_FAMILY: Final = _family_of(CREATE_COUNT_METRIC)


def _series(
    family: str, section: str, sparse: frozenset[str] = frozenset({_SPARSE_FAMILY})
) -> tuple[list[str], list[str]]:
    """A family's series names (with labels) and value texts, in page order.

    Raises ``ValueError`` on a line without a value (the caller falls back to the line parser).
    """
    if family in sparse:
        return _collect(section, CREATE_COUNT_METRIC)
    # The section is "\n" + sample lines + the next family's "# HELP" line: cut both ends
    # instead of testing every line (exporters write no comments between samples; if one does,
    # its text is not a number and the page goes to the line parser).
    end = section.rfind("\n#")
    body = section[1:end] if end >= 0 else section[1:]
    if not body.strip():
        return [], []  # a family with no samples (e.g. idle.min of pools without a minimum)
    triples = list(map(str.rpartition, body.rstrip("\n").split("\n"), _SPACE))
    heads = list(map(_HEAD, triples))
    if "" in heads:
        raise ValueError("a line without a value")
    return heads, list(map(_VALUE, triples))


def _collect(section: str, sample: str) -> tuple[list[str], list[str]]:
    """Series and values of the lines of ``section`` that are ``sample`` (with labels)."""
    heads: list[str] = []
    values: list[str] = []
    needle = "\n" + sample + "{"
    pos = section.find(needle)
    while pos >= 0:
        end = section.find("\n", pos + 1)
        line = section[pos + 1 : end] if end >= 0 else section[pos + 1 :]
        head, _, value = line.rpartition(" ")
        if head:
            heads.append(head)
            values.append(value)
        pos = section.find(needle, end) if end >= 0 else -1
    return heads, values
