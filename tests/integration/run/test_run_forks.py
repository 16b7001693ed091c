"""``poolmon run`` on a program that forks its workers after start (a pre-fork server): the
endpoint serves every worker's pools, and the totals are the sum over workers."""

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

from tests.support.http_servers import LoopbackServer

pytestmark = pytest.mark.integration

APP = Path(__file__).parent / "apps" / "forking_app.py"
N = 5
WORKERS = 3


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


def _borrows(metrics: str, pool: str) -> float | None:
    prefix = "pool_connection_wait_time_seconds_count{"
    for line in metrics.splitlines():
        if line.startswith(prefix) and f'pool_name="{pool}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_forked_workers_pools_are_served_and_add_up(
    tmp_path: Path, server: LoopbackServer
) -> None:
    info_path = tmp_path / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMON_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolmon", "run", "--port", "0", "--info-file", str(info_path)]
        + ["--", sys.executable, str(APP), f"{server.url}/ok", str(N), str(WORKERS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        done = sorted(proc.stdout.readline() for _ in range(WORKERS))
        assert done == [f"worker {i} did {N}\n" for i in range(WORKERS)]
        info = json.loads(info_path.read_text())
        # Workers write their snapshots every second: poll the endpoint until all have landed.
        deadline = time.monotonic() + 30
        borrows = None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(info["prometheus_url"], timeout=10) as resp:
                metrics = resp.read().decode()
            borrows = _borrows(metrics, f"http://127.0.0.1:{server.port}")
            if borrows == N * WORKERS:
                break
            time.sleep(0.2)
        assert borrows == N * WORKERS
        assert len(server.requests) == N * WORKERS
    finally:
        out, err = proc.communicate("end\n", timeout=30)
    assert proc.returncode == 0, err
    assert out == ""
