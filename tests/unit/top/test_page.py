"""The fast page reader agrees with prometheus_client's reference parser on real exporter output."""

from __future__ import annotations

from dataclasses import replace

from poolmon.core.identity import PoolIdentity
from poolmon.top.page import PageReader
from poolmon.top.samples import WAIT_BOUNDS

from .conftest import busy_registry, exposition, reference_samples, traffic


def test_first_page_matches_reference_parser() -> None:
    registry, _ = busy_registry(4)
    text = exposition(registry)
    got = PageReader().read(text)
    assert got == reference_samples(text)
    assert len(got) == 4
    first = got[0]
    assert (first.used, first.idle, first.max) == (1.0, 0.0, 4.0)
    assert first.creates == 2.0 and first.create_errors == 1.0
    assert first.evictions["broken"] == 1.0 and first.errors["timeout"] == 1.0
    assert first.system == "postgresql" and first.backend == "db0:5432"
    assert len(first.wait_cumulative) == len(WAIT_BOUNDS) + 1
    assert first.wait_cumulative[-1] == 2.0  # two borrows


def test_changed_values_and_unchanged_pages() -> None:
    registry, clock = busy_registry(3)
    reader = PageReader()
    before = reader.read(exposition(registry))
    assert reader.read(exposition(registry)) == before  # nothing changed: same samples
    ledger = registry.ledgers()[1]
    traffic(clock, ledger, 7)
    text = exposition(registry)
    after = reader.read(text)
    assert after == reference_samples(text)
    assert after[1].creates == before[1].creates + 2
    # The untouched pool only aged: its oldest borrow grew by the clock's advance.
    assert after[0].oldest_use > before[0].oldest_use
    assert replace(after[0], oldest_use=before[0].oldest_use) == before[0]


def test_pools_coming_and_going_rebuild_the_layout() -> None:
    registry, clock = busy_registry(3)
    reader = PageReader()
    assert len(reader.read(exposition(registry))) == 3
    registry.unregister(registry.ledgers()[0])
    text = exposition(registry)
    assert reader.read(text) == reference_samples(text)
    assert len(reader.read(text)) == 2
    extra = registry.register(PoolIdentity("late"), max_size=2)
    traffic(clock, extra, 1)
    text = exposition(registry)
    got = reader.read(text)
    assert got == reference_samples(text)
    assert [s.name for s in got][-1] == "late"


def test_awkward_pool_names_take_the_exact_path() -> None:
    names = ['quote"inside', "back\\slash", "brace}and space", "comma,=eq"]
    registry, _ = busy_registry(4, names)
    text = exposition(registry)
    got = PageReader().read(text)
    assert sorted(s.name for s in got) == sorted(names)
    assert got == reference_samples(text)


def test_page_without_type_lines_and_with_garbage() -> None:
    text = (
        'pool_connection_usage{pool_name="a",pool_connection_state="used"} 3\n'
        'pool_connection_usage{pool_name="a",pool_connection_state="idle"} 1\n'
        'pool_connection_max{pool_name="a"} 8 1700000000000\n'
        "this line is garbage\n"
        'pool_connection_pending_requests{pool_name="a"} not-a-number\n'
    )
    (sample,) = PageReader().read(text)
    assert (sample.used, sample.idle, sample.max, sample.pending) == (3.0, 1.0, 8.0, 0.0)


def test_garbage_value_in_a_typed_page_falls_back() -> None:
    registry, _ = busy_registry(2)
    text = exposition(registry).replace(
        'pool_connection_max{pool_name="postgresql://db1:5432/app"} 5.0',
        'pool_connection_max{pool_name="postgresql://db1:5432/app"} five',
    )
    got = PageReader().read(text)
    assert [s.max for s in got] == [4.0, None]


def test_doctor_series_match_reference_parser() -> None:
    """The set doctor reads (use-time count, create-time histogram, validations, min) through the
    fast path equals the reference parser's; an empty family (no pool has a minimum) is fine."""
    from prometheus_client.parser import text_string_to_metric_families

    from poolmon.top.samples import DOCTOR_METRICS, SampleBuilder

    registry, clock = busy_registry(4)
    traffic(clock, registry.ledgers()[0], 3)
    text = exposition(registry)
    assert "# TYPE pool_connection_idle_min gauge\n# HELP" in text  # the empty family
    reader = PageReader(DOCTOR_METRICS)
    got = reader.read(text)
    builder = SampleBuilder(DOCTOR_METRICS)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            builder.add(sample.name, sample.labels, float(sample.value))
    assert got == builder.build()
    assert reader.problems == []
    first = got[0]
    assert first.use_count and first.create_cumulative and not first.lifetime_cumulative
    assert first.use_count == registry.ledgers()[0].snapshot().use_time.count


def test_bad_wanted_line_is_named() -> None:
    registry, _ = busy_registry(2)
    lines = exposition(registry).splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("pool_connection_max{"))
    lines[index] = lines[index].rsplit(" ", 1)[0] + " oops"
    reader = PageReader()
    got = reader.read("\n".join(lines) + "\n")
    assert len(got) == 2
    assert reader.problems == [(index + 1, lines[index])]
