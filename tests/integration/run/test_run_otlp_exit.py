"""``poolmon run --exporter otlp``: the meter provider is shut down exactly once at exit, and that
shutdown still exports poolmon's metrics one last time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.integration.exporters.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

_APP = (
    "from poolmon import Pool, SqliteFactory\n"
    "pool = Pool(SqliteFactory(':memory:'), max_size=2, name='exit-test')\n"
    "with pool.connection() as conn:\n"
    "    conn.execute('SELECT 1')\n"
)


def _run(endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POOLMON_", "OTEL_"))}
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "2"  # a refused endpoint must not hold the exit for 10 s
    env["OTEL_METRIC_EXPORT_INTERVAL"] = "3600000"  # only the exit's export
    cmd = [sys.executable, "-m", "poolmon", "run", "--exporter", "otlp"]
    cmd += ["--otlp-endpoint", endpoint, "--", sys.executable, "-c", _APP]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_unreachable_endpoint_no_double_shutdown() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nobody listens
    ran = _run(f"http://127.0.0.1:{port}")
    assert ran.returncode == 0
    assert "shutdown can only be called once" not in ran.stderr
    assert "Traceback" not in ran.stderr
    assert "export failed" in ran.stderr  # the refused export is reported (once)


def test_exit_exports_once_to_a_real_receiver() -> None:
    with OtlpReceiver() as receiver:
        ran = _run(receiver.endpoint)
        requests = list(receiver.requests)
    assert ran.returncode == 0, ran.stderr
    assert "shutdown can only be called once" not in ran.stderr
    assert len(requests) == 1
    names = {
        m.name
        for rm in requests[0].resource_metrics
        for sm in rm.scope_metrics
        if sm.scope.name == "poolmon"
        for m in sm.metrics
    }
    assert {
        "pool.connection.wait_time",
        "pool.connection.create_time",
        "pool.connection.max",
    } <= names
