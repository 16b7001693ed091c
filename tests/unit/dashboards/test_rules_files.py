"""Rule files without a YAML parser: every alert is complete and has a runbook section.

(Prometheus itself parses them in tests/integration/dashboards: promtool and the live server.)
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RULES = (REPO / "dashboards" / "rules" / "poolmon.rules.yml").read_text()
RUNBOOKS = (REPO / "dashboards" / "runbooks.md").read_text()
REQUIRED = {
    "PoolNearSaturation",
    "PoolExhausted",
    "PoolAcquireTimeouts",
    "PoolSlowAcquire",
    "PoolConnectionLeakSuspected",
    "PoolConnectionChurn",
    "PoolConnectErrors",
    "PoolFleetOverCommit",
    "PoolProxyOverCommit",
    "PoolTenantAtQuota",  # issue 23: spec 1.1 tenants, shed, routing
    "PoolShedding",
    "PoolReplicaUnhealthy",
    "PoolReadFailover",
    "PoolmonMetricsAbsent",
}


def _alert_blocks() -> dict[str, str]:
    parts = re.split(r"(?m)^\s+- alert: ", RULES)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_all_required_alerts_exist() -> None:
    assert set(_alert_blocks()) == REQUIRED


def test_each_alert_is_complete() -> None:
    for name, block in _alert_blocks().items():
        assert re.search(r"(?m)^\s+severity: (warning|critical)$", block), name
        assert re.search(r"(?m)^\s+for: \d+[smh]$", block), name
        for key in ("summary", "description", "runbook_url"):
            assert re.search(rf"(?m)^\s+{key}: \S", block), f"{name}: no {key}"
        url = re.search(r'runbook_url: "(.*)"', block)
        assert url is not None
        assert url.group(1).endswith(f"dashboards/runbooks.md#{name.lower()}"), name


def test_each_alert_has_a_runbook_section() -> None:
    from poolmon.doctor.rules import RUNBOOKS as DOCTOR_SECTIONS

    headings = set(re.findall(r"(?m)^## (\w+)$", RUNBOOKS))
    # Every alert, plus the sections poolmon doctor's findings point at, and nothing else.
    assert headings == REQUIRED | set(DOCTOR_SECTIONS.values())
    for name in headings:
        section = RUNBOOKS.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        assert "**Means:**" in section, name
        assert "**Do:**" in section, name
