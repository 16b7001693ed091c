"""``poolmon top`` over a real ``poolmon serve`` process: directly and through a real Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from poolmon.cli import main
from tests.support.pgbouncer import PgBouncer
from tests.support.prometheus import PrometheusServer, free_port


@contextmanager
def serving(bouncer: PgBouncer, pg_dsn: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolmon", "serve", "--pgbouncer", bouncer.admin_dsn,
         "--backend", pg_dsn, "--interval", "1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = urllib.request.urlopen(url, timeout=2).read().decode()
                if "pool_proxy_info{" in body:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "poolmon serve never served the proxy pool"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _capacity(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    assert main(["top", *argv, "--once", "--json"]) == 0
    return [c["text"] for c in json.loads(capsys.readouterr().out)["capacity"]]


def test_top_shows_the_backends_of_a_serve_process(
    bouncer: PgBouncer, pg_dsn: str, prometheus_bin: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(bouncer.client_dsn()) as client, serving(bouncer, pg_dsn) as url:
        client.execute("SELECT 1")  # a client of the proxy: its pool exists
        client.rollback()
        expected = [
            re.compile(rf"pgbouncer://127\.0\.0\.1:{bouncer.port}: \d+/60 connections"),
            re.compile(r"postgresql://127\.0\.0\.1:5432: \d+/\d+ connections"),
        ]
        direct = _capacity(capsys, [url])
        assert all(any(p.fullmatch(line) for line in direct) for p in expected), direct
        target = url.split("//")[1].split("/")[0]
        with PrometheusServer(prometheus_bin, [target], interval=0.5) as prom:
            prom.wait_for_scrape()
            prom.wait_until("backend_up", lambda r: len(r) == 2)
            via_prom = _capacity(capsys, ["--prometheus", prom.url])
        assert all(any(p.fullmatch(line) for line in via_prom) for p in expected), via_prom
