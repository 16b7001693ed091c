"""``poolmon run`` on a program that forks its workers after start (a pre-fork server): the
endpoint serves every worker's pools, and the totals are the sum over workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.http_servers import LoopbackServer

pytestmark = pytest.mark.integration

APPS = Path(__file__).parent / "apps"
APP = APPS / "forking_app.py"
N = 5
WORKERS = 3


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer()
    yield srv
    srv.close()


def _run(info_path: Path) -> list[str]:
    """``poolmon run`` on a free port, up to and including ``--``."""
    return [
        sys.executable,
        "-m",
        "poolmon",
        "run",
        "--port",
        "0",
        "--info-file",
        str(info_path),
        "--",
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll_borrows(url: str, pool: str, expected: int) -> float | None:
    """Scrape until the pool shows ``expected`` borrows (workers write every second)."""
    deadline = time.monotonic() + 30
    borrows = None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as resp:
            borrows = _borrows(resp.read().decode(), pool)
        if borrows == expected:
            break
        time.sleep(0.2)
    return borrows


def _borrows(metrics: str, pool: str) -> float | None:
    prefix = "pool_connection_wait_time_seconds_count{"
    for line in metrics.splitlines():
        if line.startswith(prefix) and f'pool_name="{pool}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_forked_workers_pools_are_served_and_add_up(tmp_path: Path, server: LoopbackServer) -> None:
    info_path = tmp_path / "run.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMON_")}
    proc = subprocess.Popen(
        [*_run(info_path), sys.executable, str(APP), f"{server.url}/ok", str(N), str(WORKERS)],
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
        borrows = _poll_borrows(
            info["prometheus_url"], f"http://127.0.0.1:{server.port}", N * WORKERS
        )
        assert borrows == N * WORKERS
        assert len(server.requests) == N * WORKERS
    finally:
        out, err = proc.communicate("end\n", timeout=30)
    assert proc.returncode == 0, err
    assert out == ""


def test_gunicorn_workers_under_poolmon_run(tmp_path: Path, server: LoopbackServer) -> None:
    info_path = tmp_path / "run.json"
    app_port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POOLMON_")}
    env["BACKEND_URL"] = f"{server.url}/ok"
    proc = subprocess.Popen(
        [
            *_run(info_path),
            *(sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{app_port}"),
            *("--chdir", str(APPS), "wsgi_urllib3:app"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    requests_sent = 24
    try:
        deadline = time.monotonic() + 30
        while not info_path.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, "poolmon run / gunicorn exited early"
            time.sleep(0.05)
        info = json.loads(info_path.read_text())
        workers: set[str] = set()
        sent = 0
        while sent < requests_sent and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/", timeout=10) as r:
                    workers.add(r.read().decode())
                sent += 1
            except OSError:
                time.sleep(0.1)  # gunicorn is still booting its workers
        assert sent == requests_sent
        borrows = _poll_borrows(
            info["prometheus_url"], f"http://127.0.0.1:{server.port}", requests_sent
        )
        assert borrows == requests_sent, (borrows, sorted(workers))
        assert str(proc.pid) not in workers  # served by forked workers, not the master
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
