"""House rules for the generated dashboards, checked on the JSON (no Grafana SDK needed).

Each check returns human-readable problems naming the panel; an empty list means the dashboard is
clean. Tests run these on the committed JSON; ``poolmon dashboards build --check`` runs them too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from poolmon.core.catalog import (
    BACKEND_METRICS,
    METRICS,
    OPTIONAL_METRICS,
    PROXY_METRICS,
    SELF_METRICS,
)
from poolmon.dashboards.promql import scan

__all__ = [
    "DATASOURCE_UID",
    "RATE_INTERVAL",
    "counter_names",
    "exported_metric_names",
    "iter_panels",
    "iter_queries",
    "lint_dashboard",
]

DATASOURCE_UID: Final = "${datasource}"
RATE_INTERVAL: Final = "$__rate_interval"
#: Series Prometheus itself provides (alert state), allowed in panels besides poolmon's own.
PROMETHEUS_SERIES: Final = frozenset({"ALERTS"})
REQUIRED_VARIABLES: Final = ("datasource", "instance", "system", "pool")


def _all_specs() -> tuple[Any, ...]:
    # Pools, poolmon's own health, (spec section 12) proxy pools and backends, and (spec 1.1
    # section 14) the optional metrics of pools with bursts, tenants or routes.
    return (
        *METRICS.values(),
        *OPTIONAL_METRICS.values(),
        *SELF_METRICS.values(),
        *PROXY_METRICS.values(),
        *BACKEND_METRICS.values(),
    )


def exported_metric_names() -> frozenset[str]:
    """Every series name poolmon's Prometheus exposition can contain, from the catalog."""
    names: set[str] = set()
    for spec in _all_specs():
        if spec.instrument == "histogram":
            names.update(f"{spec.prometheus}_{suffix}" for suffix in ("bucket", "count", "sum"))
        else:
            names.add(spec.prometheus)
    return frozenset(names)


def counter_names() -> frozenset[str]:
    """Series that only grow (counters, histogram parts): meaningful only inside rate/increase."""
    names: set[str] = set()
    for spec in _all_specs():
        if spec.instrument == "counter":
            names.add(spec.prometheus)
        elif spec.instrument == "histogram":
            names.update(f"{spec.prometheus}_{suffix}" for suffix in ("bucket", "count", "sum"))
    return frozenset(names)


def iter_panels(document: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every non-row panel, including those nested in collapsed rows."""
    for panel in document.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def iter_queries(document: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(panel title, PromQL expression)`` for every target of every panel."""
    for panel in iter_panels(document):
        for target in panel.get("targets", []):
            yield str(panel.get("title")), str(target.get("expr", ""))


def _lint_variables(document: Mapping[str, Any]) -> list[str]:
    variables = document.get("templating", {}).get("list", [])
    problems = []
    datasources = [v for v in variables if v.get("type") == "datasource"]
    if len(datasources) != 1 or datasources[0].get("name") != "datasource":
        problems.append(
            f"expected exactly one datasource variable named 'datasource', found "
            f"{[v.get('name') for v in datasources]}"
        )
    elif datasources[0].get("query") != "prometheus":
        problems.append("the datasource variable must select Prometheus data sources")
    names = {v.get("name") for v in variables}
    problems += [f"missing variable {name!r}" for name in REQUIRED_VARIABLES if name not in names]
    for variable in variables:
        if variable.get("type") == "query":
            uid = (variable.get("datasource") or {}).get("uid")
            if uid != DATASOURCE_UID:
                problems.append(f"variable {variable.get('name')!r} uses datasource {uid!r}")
    return problems


def _lint_query(
    title: str, expr: str, known: frozenset[str], counters: frozenset[str]
) -> list[str]:
    result = scan(expr)
    problems = [
        f"{title!r}: {use.function}() over [{use.range}] instead of [{RATE_INTERVAL}]"
        for use in result.rates
        if use.range != RATE_INTERVAL
    ]
    problems += [
        f"{title!r}: counter {name} used outside rate()/increase()"
        for name in result.counters_outside_rate(counters)
    ]
    problems += [
        f"{title!r}: {name} is not a metric poolmon exports"
        for name in sorted(result.metric_names - known - PROMETHEUS_SERIES)
    ]
    return problems


def _lint_panel(panel: Mapping[str, Any]) -> list[str]:
    title = str(panel.get("title"))
    problems = []
    if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
        problems.append(f"{title!r}: no unit")
    if "Act when" not in str(panel.get("description", "")):
        problems.append(f"{title!r}: description must say what it shows and 'Act when ...'")
    if (panel.get("datasource") or {}).get("uid") != DATASOURCE_UID:
        problems.append(f"{title!r}: panel datasource is not {DATASOURCE_UID}")
    targets = panel.get("targets", [])
    if not targets:
        problems.append(f"{title!r}: no queries")
    for target in targets:
        if (target.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            problems.append(f"{title!r}: target {target.get('refId')} datasource is not templated")
    return problems


def lint_dashboard(document: Mapping[str, Any]) -> list[str]:
    """Every house-rule violation in one dashboard document."""
    problems = []
    if "__generated__" not in document:
        problems.append("missing the __generated__ marker")
    problems += _lint_variables(document)
    known, counters = exported_metric_names(), counter_names()
    for panel in iter_panels(document):
        problems += _lint_panel(panel)
    for title, expr in iter_queries(document):
        problems += _lint_query(title, expr, known, counters)
    return problems
