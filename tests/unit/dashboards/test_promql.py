"""The PromQL scanner behind the lint rules."""

from __future__ import annotations

from poolmon.dashboards.promql import scan, substitute


def test_metrics_and_rate_context() -> None:
    result = scan(
        'sum by (pool_name, le) (rate(a_bucket{x="rate(b_total)"}[$__rate_interval]))'
        " / on (pool_name) group_left (server_address) c_total"
    )
    assert [(m.name, m.in_rate) for m in result.metrics] == [("a_bucket", True), ("c_total", False)]
    assert [(r.function, r.range) for r in result.rates] == [("rate", "$__rate_interval")]
    assert result.counters_outside_rate() == ["c_total"]


def test_label_lists_keywords_and_numbers_are_not_metrics() -> None:
    result = scan(
        "histogram_quantile(0.95, sum without (instance) (increase(x_count[5m]))) > 1e-3 "
        "and on () count by (job) (up) unless ignoring (a) absent(y) offset 5m"
    )
    assert result.metric_names == {"x_count", "up", "y"}
    assert [(r.function, r.range) for r in result.rates] == [("increase", "5m")]


def test_counters_outside_rate_uses_the_given_set() -> None:
    result = scan("pool_connection_usage + x_count")
    assert result.counters_outside_rate() == []
    assert result.counters_outside_rate({"x_count"}) == ["x_count"]


def test_nested_rate_call_without_range() -> None:
    result = scan("rate(foo_total)")
    assert [(r.function, r.range) for r in result.rates] == [("rate", None)]


def test_substitute_longest_names_first() -> None:
    expr = 'x{a=~"$pool", b=~"${pool_system}"}[$__rate_interval]'
    assert substitute(expr, {"pool": "p", "pool_system": "s", "__rate_interval": "1m"}) == (
        'x{a=~"p", b=~"s"}[1m]'
    )
