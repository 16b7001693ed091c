"""``poolmon run -- python examples/app_all.py``: an unmodified app using requests, redis and
psycopg, started in a subprocess; its /metrics is scraped while it waits on stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from poolmon.conformance import validate_stream
from tests.support.http_servers import LoopbackServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
APP = ROOT / "examples" / "app_all.py"
N = 7


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


def _wait_for_file(path: Path, proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the program exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.01)
    return path.read_text()


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (labels given must all match)."""
    for line in metrics.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels}")


def _start(
    tmp_path: Path, args: list[str], app_args: list[str]
) -> tuple[subprocess.Popen[str], Path]:
    info = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "poolmon", "run", "--info-file", str(info), *args, "--"]
    cmd += [sys.executable, str(APP), *app_args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMON_")}
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return proc, info


def test_run_exposes_all_three_pools_and_keeps_exit_code_and_output(
    tmp_path: Path, server: LoopbackServer, pg_dsn: str, redis_url: str
) -> None:
    # Credentials the app is given must not come out anywhere (PostgreSQL here trusts loopback).
    dsn = pg_dsn.replace("postgres@", "postgres:pg-sekrit-pw@", 1)
    http_url = f"http://alice:http-sekrit-pw@127.0.0.1:{server.port}/ok"
    jsonl = tmp_path / "events.jsonl"
    app_args = ["--http", http_url, "--redis", redis_url, "--pg", dsn, "--n", str(N)]
    app_args += ["--exit-code", "3"]
    proc, info_path = _start(
        tmp_path,
        ["--exporter", "prometheus,jsonl", "--port", "0", "--jsonl", str(jsonl)],
        app_args,
    )
    try:
        info = json.loads(_wait_for_file(info_path, proc))
        assert info["pid"] == proc.pid  # exec'd in place: same process
        assert "urllib3" in info["shims"]
        assert proc.stdout is not None
        summary = proc.stdout.readline()  # the app has done its N rounds
        assert summary == f"http={N} redis={N} pg={N}\n"
        with urllib.request.urlopen(info["prometheus_url"], timeout=10) as resp:
            metrics = resp.read().decode()
    finally:
        out, err = proc.communicate("exit\n", timeout=30)
    assert proc.returncode == 3
    assert out == ""  # nothing after the summary line, nothing from poolmon
    assert err == "app_all: waiting for end of input\n"

    http_pool = f"http://127.0.0.1:{server.port}"
    assert (
        _sample(metrics, "pool_connection_usage", pool_name=http_pool, pool_connection_state="idle")
        == 1
    )
    assert (
        _sample(metrics, "pool_connection_usage", pool_name=http_pool, pool_connection_state="used")
        == 0
    )
    assert _sample(metrics, "pool_connection_wait_time_seconds_count", pool_name=http_pool) == N
    assert _sample(metrics, "pool_connection_use_time_seconds_count", pool_name=http_pool) == N
    redis_pools = {
        ln.split('pool_name="')[1].split('"')[0]
        for ln in metrics.splitlines()
        if ln.startswith("pool_connection_usage{") and "redis://" in ln
    }
    pg_pools = {
        ln.split('pool_name="')[1].split('"')[0]
        for ln in metrics.splitlines()
        if ln.startswith("pool_connection_usage{") and "postgresql://" in ln
    }
    assert {"redis", "psycopg"} <= set(info["shims"])
    (redis_pool,) = redis_pools
    (pg_pool,) = pg_pools
    # Each round borrows redis twice (SET, GET) and PostgreSQL once; nothing is still borrowed.
    redis_uses = _sample(metrics, "pool_connection_use_time_seconds_count", pool_name=redis_pool)
    assert redis_uses == 2 * N
    assert _sample(metrics, "pool_connection_use_time_seconds_count", pool_name=pg_pool) == N
    for pool in (redis_pool, pg_pool):
        used = _sample(
            metrics, "pool_connection_usage", pool_name=pool, pool_connection_state="used"
        )
        assert used == 0

    events = jsonl.read_text()
    assert validate_stream(events.splitlines()) == []
    for text in (metrics, events, out, err):
        for secret in ("pg-sekrit-pw", "http-sekrit-pw", "alice"):
            assert secret not in text


def test_run_without_options_serves_prometheus_and_reports_bad_settings(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMON_")}
    bad = subprocess.run(
        [sys.executable, "-m", "poolmon", "run", "--exporter", "carrier-pigeon", "--", "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and "--exporter=" in bad.stderr  # what the user typed
    missing = subprocess.run(
        [sys.executable, "-m", "poolmon", "run", "--", "no-such-command-poolmon"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 127 and "command not found" in missing.stderr
    info = tmp_path / "info.json"
    probe = "import poolmon.shims as s, sys; print(s.instrumented()); sys.exit(5)"
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolmon",
            "run",
            "--port",
            "0",
            "--info-file",
            str(info),
            "--",
            sys.executable,
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ran.returncode == 5 and ran.stderr == ""
    assert "urllib3" in ran.stdout
    assert json.loads(info.read_text())["prometheus_url"].startswith("http://127.0.0.1:")


def test_run_help_explains_the_command() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "poolmon", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0
    for word in ("--exporter", "POOLMON_EXPORTERS", "exit code", "--leak-threshold"):
        assert word in helped.stdout
