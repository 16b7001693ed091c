"""The committed dashboard JSON is exactly the generator's output, and survives the SDK's
decoder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "dashboards" / "poolmon-pools.json"


@pytest.fixture(scope="module")
def generator() -> Any:
    require(
        importlib.util.find_spec("grafana_foundation_sdk") is not None,
        "grafana-foundation-sdk (pip install 'poolmon[dashboards]')",
    )
    from poolmon.dashboards import generator

    return generator


def test_committed_json_equals_generator_output(generator: Any) -> None:
    files = generator.dashboard_files()
    assert set(files) == {p.name for p in (REPO / "dashboards").glob("*.json")}
    for name, text in files.items():
        assert (REPO / "dashboards" / name).read_text(encoding="utf-8") == text, (
            f"dashboards/{name} is stale: run `poolmon dashboards build`"
        )


def test_build_is_deterministic(generator: Any) -> None:
    assert generator.render(generator.build_dashboard()) == generator.render(
        generator.build_dashboard()
    )


def test_json_round_trips_through_the_sdk(generator: Any) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    document = json.loads(COMMITTED.read_text())
    body = {k: v for k, v in document.items() if not k.startswith("__")}
    decoded = Dashboard.from_json(body)
    assert json.loads(json.dumps(decoded, cls=JSONEncoder)) == body
    # Decoding really typed the panels (not an opaque dict pass-through).
    assert decoded.uid == "poolmon-pools"
    assert decoded.panels is not None
    assert {type(p).__name__ for p in decoded.panels} == {"Panel", "RowPanel"}


def test_generated_marker_and_sdk_pin(generator: Any) -> None:
    document = json.loads(COMMITTED.read_text())
    assert document["__generated__"].startswith("GENERATED")
    assert "GENERATED" in document["description"]
    from importlib import metadata

    version = metadata.version("grafana-foundation-sdk")
    assert version.endswith("!" + generator.GRAFANA_VERSION), version
    assert f"grafana-foundation-sdk=={version}" in (REPO / "pyproject.toml").read_text()


def test_cli_check_passes_and_detects_drift(generator: Any, tmp_path: Path, capsys: Any) -> None:
    from poolmon.cli import main

    assert main(["dashboards", "build", "--check"]) == 0
    assert main(["dashboards", "build", "--output", str(tmp_path)]) == 0
    written = tmp_path / "poolmon-pools.json"
    assert written.read_text() == COMMITTED.read_text()
    written.write_text(written.read_text().replace('"unit": "s"', '"unit": "ms"', 1))
    capsys.readouterr()
    assert main(["dashboards", "build", "--check", "--output", str(tmp_path)]) == 1
    assert "differs from the generator" in capsys.readouterr().out


def test_python_m_dashboards_runs(generator: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dashboards", "build", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date and lint-clean" in result.stdout


def test_cli_module_does_not_import_the_sdk() -> None:
    code = (
        "import sys, poolmon.cli; poolmon.cli.build_parser(); "
        "print(any(m.startswith('grafana_foundation_sdk') for m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_resource_variable_narrows_pools_and_names_them() -> None:
    """Spec 1.1 ``pool.resource``: one ``resource`` variable from the catalog, not duplicated
    panels; its text (the catalog's noun) fills the titles that name what a pool lends."""
    import json

    from poolmon.core.catalog import RESOURCES
    from poolmon.dashboards.lint import iter_panels
    from poolmon.dashboards.panels import NOUN

    doc = json.loads(
        (Path(__file__).resolve().parents[3] / "dashboards/poolmon-pools.json").read_text()
    )
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    resource = variables["resource"]
    assert resource["type"] == "custom" and resource["multi"] is False
    texts = [o["text"] for o in resource["options"]]
    assert texts == [kind.resource_noun for kind in RESOURCES.values()]
    assert resource["current"]["text"] == "connections"
    # Connection pools carry no pool_resource label (1.0 output unchanged): the empty value too.
    assert resource["current"]["value"] == "connection|"
    assert 'pool_resource=~"$resource"' in variables["pool"]["query"]
    names = [v["name"] for v in doc["templating"]["list"]]
    assert names.index("resource") < names.index("pool")  # the pool list depends on it
    titles = [p["title"] for p in iter_panels(doc)]
    assert sum(NOUN in t for t in titles) >= 3
    # Outside the fleet and backend-capacity rows (backend servers, PgBouncer), no title says
    # "connection" outright.
    fleet = {
        "Connections per backend",
        "Backend over-commit",
        "Backend connections vs limit",
        "Backend connections by client",
        "PgBouncer: waiting clients and server connections",
    }
    assert [t for t in titles if "onnection" in t and t not in fleet] == []
