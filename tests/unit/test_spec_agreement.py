"""The standard says one thing everywhere: prose, schema, catalog, generated copy and code agree."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from poolmon.conformance import RULES
from poolmon.core import catalog, events
from poolmon.core._spec_data import CATALOG, EVENT_SCHEMA
from poolmon.core.events import PoolEvent
from poolmon.core.identity import SYSTEMS

ROOT = Path(__file__).resolve().parents[2]
PROSE = (ROOT / "spec" / "README.md").read_text()
SCHEMA = json.loads((ROOT / "spec" / "event.schema.json").read_text())
CATALOG_JSON = json.loads((ROOT / "spec" / "catalog.json").read_text())


def _enum(field: str) -> list[Any]:
    values = SCHEMA["properties"][field]["enum"]
    assert isinstance(values, list)
    return values


def _bound(x: float) -> str:
    return format(x, "f").rstrip("0").rstrip(".")


def test_generated_copy_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_spec", ROOT / "scripts" / "gen_spec.py")
    assert spec is not None and spec.loader is not None
    gen_spec = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_spec)
    assert gen_spec.main(["--check"]) == 0
    assert CATALOG == CATALOG_JSON and EVENT_SCHEMA == SCHEMA


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert catalog.SPEC_VERSION.split(".")[0] in SCHEMA["properties"]["v"]["pattern"]


def test_schema_enumerations_equal_the_catalog() -> None:
    assert _enum("kind") == list(catalog.EVENT_KINDS)
    assert _enum("reason") == list(catalog.EVICTION_REASONS)
    assert _enum("error_type") == list(catalog.ERROR_TYPES)
    assert _enum("phase") == list(catalog.ERROR_PHASES)
    assert _enum("outcome") == list(catalog.OUTCOMES)
    assert set(_enum("system")) == SYSTEMS


def test_event_constants_and_fields_match_the_schema() -> None:
    kinds = [getattr(events, name) for name in ("OPEN", "CREATE", "VALIDATE", "WAIT", "BORROW",
             "RETURN", "EVICT", "ERROR", "CLOSE")]  # fmt: skip
    assert kinds == list(catalog.EVENT_KINDS)
    fields = set(PoolEvent.__dataclass_fields__) | {"v"}  # v is added by to_dict()
    assert fields == set(SCHEMA["properties"])


def test_design_minimum_enumerations_are_present() -> None:
    for reason in ("idle_timeout", "max_lifetime", "failed_validation", "broken", "reset_failed",
                   "overflow", "pool_closed", "leaked", "fork"):  # fmt: skip
        assert reason in catalog.EVICTION_REASONS
    for error in ("timeout", "exhausted", "create_failed", "validation_failed", "leak_suspected"):
        assert error in catalog.ERROR_TYPES


@pytest.mark.parametrize(
    "entry",
    CATALOG_JSON["metrics"]
    + CATALOG_JSON["self_metrics"]
    + CATALOG_JSON["proxy_metrics"]
    + CATALOG_JSON["backend_metrics"],
    ids=lambda m: m["name"],
)
def test_every_metric_has_its_row_in_the_prose(entry: dict[str, Any]) -> None:
    unit = entry["unit"] or "(none)"
    attrs = ", ".join(entry["attributes"]) or "(none)"
    row = (
        f"| `{entry['name']}` | `{entry['prometheus']}` | {entry['instrument']} | `{unit}` "
        f"| {attrs} | {entry['description']} |"
    )
    assert row in PROSE
    spec = catalog.metric(entry["name"])
    assert (spec.prometheus, spec.unit, list(spec.attributes)) == (
        entry["prometheus"],
        entry["unit"],
        entry["attributes"],
    )


def test_prometheus_names_follow_the_otel_translation() -> None:
    # The OTel -> Prometheus translation: dots to underscores, unit suffix for seconds,
    # "_total" for monotonic counters; curly-brace annotations are dropped.
    for spec in [
        *catalog.METRICS.values(),
        *catalog.SELF_METRICS.values(),
        *catalog.PROXY_METRICS.values(),
        *catalog.BACKEND_METRICS.values(),
    ]:
        expected = spec.name.replace(".", "_")
        if spec.unit == "s":
            expected += "_seconds"
        if spec.instrument == "counter":
            expected += "_total"
        assert spec.prometheus == expected, spec.name


def test_every_enumeration_value_is_explained_in_the_prose() -> None:
    for reason, meaning in CATALOG_JSON["eviction_reasons"].items():
        assert f"| `{reason}` | {meaning} |" in PROSE
    for error_type, meaning in CATALOG_JSON["error_types"].items():
        assert f"| `{error_type}` | {meaning} |" in PROSE
    for key in ("proxy_client_states", "proxy_server_states", "poll_error_types"):
        for value, meaning in CATALOG_JSON[key].items():
            assert f"| `{value}` | {meaning} |" in PROSE, (key, value)
    for phase in catalog.ERROR_PHASES:
        assert f"`{phase}`" in PROSE
    for kind in catalog.EVENT_KINDS:
        assert re.search(rf"^\| `{kind}` \|", PROSE, re.MULTILINE), kind


def test_bucket_boundaries_are_in_the_prose_and_span_50us_to_30s() -> None:
    for key, bounds in catalog.BUCKETS.items():
        assert f"- `{key}`: `{', '.join(_bound(b) for b in bounds)}`" in PROSE
        assert list(bounds) == sorted(set(bounds))
    for key in ("wait_time", "create_time"):
        assert catalog.BUCKETS[key][0] <= 0.00005 and catalog.BUCKETS[key][-1] >= 30


def test_semconv_mapping_is_in_the_prose() -> None:
    for family in catalog.SEMCONV.values():
        for ours, mapping in family.items():
            assert ours in catalog.METRICS
            assert f"| `{ours}` | `{mapping['name']}` |" in PROSE
    assert "db.client.connection.pool.name" in PROSE
    assert "`http.client.open_connections`" in PROSE
    assert "`http.client.connection.duration`" in PROSE


def test_every_checker_rule_is_in_the_prose() -> None:
    for rule, text in RULES.items():
        assert f"| `{rule}` | {text} |" in PROSE


def test_proxy_pool_mapping_names_every_show_pools_state() -> None:
    # Spec section 12.1: each PgBouncer state is mapped, and the names never drift from the code.
    for column in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login", "cl_active",
                   "cl_waiting", "maxwait", "total_wait_time", "avg_wait_time", "max_client_conn",
                   "pool_size", "pool_mode"):  # fmt: skip
        assert f"`{column}`" in PROSE, column
    assert set(catalog.BACKEND_SYSTEMS) <= SYSTEMS | {"pgbouncer"}
