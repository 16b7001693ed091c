"""The thresholds table: documented in docs/doctor.md exactly as the code has it; overrides
checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from poolmon.doctor.rules import RUNBOOKS
from poolmon.doctor.thresholds import Thresholds, load_toml, markdown_table
from poolmon.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_docs_table_is_the_code_table() -> None:
    doc = (REPO / "docs" / "doctor.md").read_text()
    block = doc.split("<!-- thresholds:begin (generated) -->\n", 1)[1].split(
        "<!-- thresholds:end -->", 1
    )[0]
    assert block.strip() == markdown_table().strip()


def test_every_finding_kind_is_documented_with_its_runbook() -> None:
    doc = (REPO / "docs" / "doctor.md").read_text()
    runbooks = (REPO / "dashboards" / "runbooks.md").read_text()
    for kind, section in RUNBOOKS.items():
        assert re.search(rf"^\| `{kind}` \|.*\| {section} \|$", doc, re.M), kind
        assert f"\n## {section}\n" in runbooks, section


def test_overrides_are_checked() -> None:
    t = Thresholds().with_overrides({"saturation": "0.8", "storm_creates": 50})
    assert t.saturation == 0.8 and t.storm_creates == 50
    with pytest.raises(ConfigError, match=r"saturation=.*\[0\.1, 1\]"):
        Thresholds().with_overrides({"saturation": 1.5})
    with pytest.raises(ConfigError, match="a threshold name"):
        Thresholds().with_overrides({"saturaton": 0.5})
    with pytest.raises(ConfigError, match="an integer"):
        Thresholds().with_overrides({"min_borrows": 2.5})
    with pytest.raises(ConfigError, match="refusal_critical"):
        Thresholds(refusal_fraction=0.5, refusal_critical=0.1)


def test_toml(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[thresholds]\nleak_age = 5\n")
    (tmp_path / "b.toml").write_text("leak_age = 6\n")
    (tmp_path / "c.toml").write_text("leak_age = \n")
    assert load_toml(tmp_path / "a.toml") == {"leak_age": 5}
    assert load_toml(tmp_path / "b.toml") == {"leak_age": 6}
    with pytest.raises(ConfigError, match="valid TOML"):
        load_toml(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="readable"):
        load_toml(tmp_path / "missing.toml")
