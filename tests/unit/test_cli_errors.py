"""Issue 21's first four defects, each as the user met it, run through the CLI in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poolmon.cli import main
from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import serve


def test_top_once_with_an_unclosed_ipv6_url_reports_that_source_and_shows_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["top", "--once", "http://[::1"]) == 1  # no source answered
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "DOWN http://[::1: invalid URL: Invalid IPv6 URL" in captured.out
    registry = PoolRegistry()
    registry.register(identity_from_url("redis://cache:6379/0"), max_size=3)
    with serve(0, registry=registry) as server:
        assert main(["top", "--once", "--json", "http://[::1", server.url]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in doc["pools"]] == ["redis://cache:6379/0"]
    bad, good = doc["sources"]
    assert (bad["ok"], bad["error"]) == (False, "invalid URL: Invalid IPv6 URL")
    assert good["ok"] is True


def test_top_prometheus_source_with_a_bad_url_is_down_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["top", "--once", "--prometheus", "http://u:s3cret@[::1:9090"]) == 1
    out = capsys.readouterr().out
    assert "invalid URL" in out and "s3cret" not in out


def test_dashboards_build_into_an_impossible_directory_names_the_path_and_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["dashboards", "build", "--out", "/proc/x"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "poolmon dashboards build: --output='/proc/x' is invalid: expected a writable directory "
        "(No such file or directory)\n"
    )
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["dashboards", "build", "--output", str(afile)]) == 2
    assert "expected a directory (this is a file)" in capsys.readouterr().err
    assert main(["dashboards", "build", "--check", "--output", str(tmp_path / "nothing")]) == 1


def test_run_with_a_bogus_exporter_names_the_option_typed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POOLMON_EXPORTERS", raising=False)
    assert main(["run", "--exporter", "bogus", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "poolmon run: --exporter='bogus' is invalid: expected a comma list of prometheus, "
        "otlp, jsonl\n"
    )
    # Set in the environment (not typed), the variable is what gets named.
    monkeypatch.setenv("POOLMON_EXPORTERS", "bogus")
    assert main(["run", "--", "true"]) == 2
    assert capsys.readouterr().err.startswith("poolmon run: POOLMON_EXPORTERS='bogus'")
