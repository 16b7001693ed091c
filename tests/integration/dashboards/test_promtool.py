"""promtool: the rule files check and pass their unit tests, every panel query parses, and the
provisioning example's Prometheus config is valid."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from poolmon.dashboards.lint import iter_queries
from poolmon.dashboards.promql import substitute

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "dashboards" / "rules"
DASHBOARD = REPO / "dashboards" / "poolmon-pools.json"
#: Any valid values do for parsing.
VARIABLES = {
    "instance": ".*",
    "system": ".*",
    "pool": ".*",
    "resource": "connection|",  # the resource variable's default (connection pools)
    "backend_limit": "100",
    "__rate_interval": "1m",
}


def _promtool(promtool_bin: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rule_files_check(promtool_bin: str) -> None:
    files = sorted(str(p) for p in RULES.glob("*.yml"))
    assert len(files) == 2
    result = _promtool(promtool_bin, "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass(promtool_bin: str) -> None:
    tests = sorted(str(p) for p in (RULES / "tests").glob("*.yml"))
    assert tests
    result = _promtool(promtool_bin, "test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_not_firing_test() -> None:
    rules = (RULES / "poolmon.rules.yml").read_text()
    alerts = re.findall(r"(?m)^\s+- alert: (\w+)$", rules)
    tests = "\n".join(p.read_text() for p in (RULES / "tests").glob("*.yml"))
    # Each alert_rule_test entry: "alertname: X" then its eval_time and exp_alerts.
    cases = re.findall(
        r"- alertname: (\w+).*?\n\s+eval_time: \S+.*?\n\s+exp_alerts:( \[\])?", tests
    )
    for alert in alerts:
        outcomes = {empty == " []" for name, empty in cases if name == alert}
        assert outcomes == {True, False}, f"{alert}: need a firing and a not-firing test"


def test_unit_tests_catch_a_broken_rule(promtool_bin: str, tmp_path: Path) -> None:
    # The tests can fail: raise the saturation threshold and they must.
    (tmp_path / "tests").mkdir()
    rules = (RULES / "poolmon.rules.yml").read_text()
    mutated = rules.replace("ratio >= 0.9", "ratio >= 0.95")
    assert mutated != rules
    (tmp_path / "poolmon.rules.yml").write_text(mutated)
    (tmp_path / "poolmon-limits.yml").write_text((RULES / "poolmon-limits.yml").read_text())
    for test in (RULES / "tests").glob("*.yml"):
        (tmp_path / "tests" / test.name).write_text(test.read_text())
    result = _promtool(promtool_bin, "test", "rules", *map(str, (tmp_path / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert "PoolNearSaturation" in result.stdout + result.stderr


def test_every_panel_query_parses(promtool_bin: str, tmp_path: Path) -> None:
    # One recording rule per panel query (variables substituted): promtool parses each.
    queries = list(iter_queries(json.loads(DASHBOARD.read_text())))
    assert len(queries) > 20
    rules = [
        {"record": f"poolmon_dashboard:query_{i}", "expr": substitute(expr, VARIABLES)}
        for i, (_, expr) in enumerate(queries)
    ]
    path = tmp_path / "panels.yml"
    path.write_text(json.dumps({"groups": [{"name": "panels", "rules": rules}]}))  # JSON is YAML
    result = _promtool(promtool_bin, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_query_is_caught(promtool_bin: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(
        json.dumps(
            {"groups": [{"name": "x", "rules": [{"record": "a:b", "expr": "sum(rate(x[5m])"}]}]}
        )
    )
    assert _promtool(promtool_bin, "check", "rules", str(path)).returncode != 0


def test_provisioning_prometheus_config_is_valid(promtool_bin: str) -> None:
    config = REPO / "examples" / "provisioning" / "prometheus.yml"
    # Rule paths in the example are relative to the config file's directory.
    result = _promtool(promtool_bin, "check", "config", config.name, cwd=config.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout
