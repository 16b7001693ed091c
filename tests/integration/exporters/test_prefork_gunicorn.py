"""Pre-fork: gunicorn with three workers, each with a pool; the master's /metrics adds them up."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.prometheus import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
WORKERS = 3
POOL_SIZE = 2
REQUESTS = 60


def _scrape(url: str) -> dict[str, float]:
    """Sum of every sample by name (the totals a dashboard's sum() shows)."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = collections.defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name
            if s.name == "pool_connection_usage":
                key = f"{s.name}:{s.labels['pool_connection_state']}"
            if s.name.endswith("_bucket"):
                continue
            totals[key] += s.value
    return totals


def _until(what: str, check: object, timeout: float = 30.0) -> object:
    """Poll real state (files, HTTP) until ``check()`` is truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()  # type: ignore[operator]
        except OSError as exc:
            last = exc
        if last:
            return last
        time.sleep(0.05)
    raise TimeoutError(f"{what}: last {last!r}")


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[tuple[str, str, Path, subprocess.Popen[bytes]]]:
    app_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "APP_BIND": f"127.0.0.1:{app_port}",
        "WEB_CONCURRENCY": str(WORKERS),
        "APP_POOL_SIZE": str(POOL_SIZE),
        "POOLMON_MULTIPROC_DIR": str(tmp_path),
        "POOLMON_MULTIPROC_INTERVAL": "0.1",
        "POOLMON_PROMETHEUS_PORT": str(metrics_port),
        "PYTHONPATH": str(ROOT),
    }
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            str(ROOT / "examples" / "gunicorn_conf.py"),
            "--chdir",
            str(ROOT / "examples"),
            "gunicorn_app:app",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield (
            f"http://127.0.0.1:{app_port}/",
            f"http://127.0.0.1:{metrics_port}/metrics",
            tmp_path,
            proc,
        )
    finally:
        proc.send_signal(signal.SIGTERM)  # our own master; it stops its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_three_workers_totals_add_up(
    gunicorn: tuple[str, str, Path, subprocess.Popen[bytes]],
) -> None:
    app_url, metrics_url, directory, _ = gunicorn
    _until(
        "three workers wrote snapshots",
        lambda: len(list(directory.glob("poolmon-*.json"))) == WORKERS,
    )
    totals = _until(
        "merged pools", lambda: (t := _scrape(metrics_url))["poolmon_pools"] == WORKERS and t
    )
    assert totals["pool_connection_max"] == WORKERS * POOL_SIZE  # type: ignore[index]
    assert totals["pool_connection_usage:idle"] == WORKERS * POOL_SIZE  # type: ignore[index]
    per_pid: collections.Counter[str] = collections.Counter()
    for _ in range(REQUESTS):
        with urllib.request.urlopen(app_url, timeout=10) as resp:
            per_pid[resp.read().decode().split()[0]] += 1
    assert sum(per_pid.values()) == REQUESTS
    totals = _until(
        "borrows reach the master endpoint",
        lambda: (
            (t := _scrape(metrics_url))["pool_connection_wait_time_seconds_count"] == REQUESTS and t
        ),
    )
    assert totals["pool_connection_use_time_seconds_count"] == REQUESTS  # type: ignore[index]
    assert totals["pool_connection_usage:used"] == 0  # type: ignore[index]
    # Kill one worker that served requests: its counts stay, gunicorn replaces it.
    victim = int(per_pid.most_common(1)[0][0].removeprefix("pid="))
    os.kill(victim, signal.SIGKILL)  # a worker of the gunicorn master this test started
    _until(
        "the dead worker is marked",
        lambda: '"dead":true' in (directory / f"poolmon-{victim}.json").read_text(),
    )
    totals = _until(
        "a replacement worker joined",
        lambda: (t := _scrape(metrics_url))["poolmon_pools"] == WORKERS and t,
    )
    assert totals["pool_connection_wait_time_seconds_count"] == REQUESTS  # type: ignore[index]
    assert totals["pool_connection_max"] == WORKERS * POOL_SIZE  # type: ignore[index]
