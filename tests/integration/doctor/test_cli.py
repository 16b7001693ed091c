"""``poolmon doctor`` at the command line: sources down or malformed, bad flags, exit status.

Real parts: a served registry on loopback (poolmon's exporter), a loopback HTTP server serving a
broken page, JSONL files written by a real pool. The CLI runs in process (``poolmon.cli.main``);
the unknown-flag and bad-value cases also run in a subprocess, where a traceback would show.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from poolmon import Pool
from poolmon.cli import main
from poolmon.core.clock import ManualClock
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import JsonlSink
from poolmon.doctor import diagnose
from poolmon.pool import factory
from poolmon.prometheus import serve


@dataclass
class _Run:
    returncode: int
    stdout: str
    stderr: str


class _Doctor:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> _Run:
        self.capsys.readouterr()
        try:
            code = main(["doctor", *args])
        except SystemExit as exc:  # argparse's own usage errors
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return _Run(code, out, err)


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "poolmon", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def doctor(capsys: pytest.CaptureFixture[str]) -> _Doctor:
    return _Doctor(capsys)


@pytest.fixture
def leaky_page() -> Iterator[str]:
    """A served registry whose one pool holds a borrow for 120 s (on its injected clock)."""
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    pool = Pool(
        factory(object), max_size=4, maintain=False, registry=registry, clock=clock, name="held"
    )
    with pool, serve(0, registry=registry) as server:
        kept = pool.getconn()
        clock.advance(120.0)
        yield server.url
        pool.putconn(kept)


class _Broken(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_page(leaky_page: str) -> Iterator[str]:
    """The leaky page with one of its lines garbled (line 5 of the served text)."""
    import urllib.request

    with urllib.request.urlopen(leaky_page) as resp:
        lines = resp.read().decode().splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("pool_connection_max{"))
    lines[index] = lines[index].rsplit(" ", 1)[0] + " not-a-number"
    handler = type("H", (_Broken,), {"body": ("\n".join(lines) + "\n").encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics#line{index + 1}"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_source_reported_others_still_diagnosed(
    leaky_page: str, doctor: _Doctor
) -> None:
    run = doctor("127.0.0.1:1", leaky_page, "--json")
    assert "Traceback" not in run.stderr
    doc = json.loads(run.stdout)
    down = [p for p in doc["problems"] if p["down"]]
    assert [p["source"] for p in down] == ["http://127.0.0.1:1/metrics"]
    assert "refused" in down[0]["message"].lower()
    assert doc["pools"] == 1
    assert [f["kind"] for f in doc["findings"]] == ["leak"]
    assert run.returncode == 0  # a warning, below the default --fail-on critical


def test_fail_on_sets_the_exit_status(leaky_page: str, doctor: _Doctor) -> None:
    assert doctor(leaky_page, "--fail-on", "warning").returncode == 1
    assert doctor(leaky_page, "--fail-on", "critical").returncode == 0
    assert doctor(leaky_page, "--leak-age", "500", "--fail-on", "info").returncode == 0


def test_every_source_down_is_status_2(doctor: _Doctor) -> None:
    run = doctor("127.0.0.1:1")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "down" in run.stdout


def test_malformed_metrics_line_is_named(broken_page: str, doctor: _Doctor) -> None:
    url, _, fragment = broken_page.partition("#")
    number = int(fragment.removeprefix("line"))
    report = diagnose(urls=[url])
    [problem] = report.problems
    assert problem.message.startswith(f"line {number}: ")
    assert "not-a-number" in problem.message
    assert report.pools == 1  # the other lines are still read


def test_malformed_jsonl_lines_are_named(tmp_path: Path, doctor: _Doctor) -> None:
    path = tmp_path / "events.jsonl"
    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    sink = JsonlSink(path)
    registry.subscribe(sink)
    with (
        Pool(
            factory(object), max_size=2, maintain=False, registry=registry, clock=clock, name="p"
        ) as pool,
        pool.connection(),
    ):
        pass
    sink.close()
    lines = path.read_text().splitlines()
    lines.insert(2, "{not json")
    lines.insert(4, '{"kind": "borrow"}')
    path.write_text("\n".join(lines) + "\n")
    run = doctor(str(path), "--json")
    assert "Traceback" not in run.stderr
    doc = json.loads(run.stdout)
    messages = [p["message"] for p in doc["problems"]]
    assert messages[0].startswith("line 3: not JSON")
    assert messages[1].startswith("line 5: ")
    assert doc["pools"] == 1


def test_unknown_flag_and_bad_value_in_a_real_process() -> None:
    for args, text in ((["--bogus"], "--bogus"), (["--saturation", "3"], "[0.1, 1]")):
        run = _subprocess(*args)
        assert run.returncode == 2, args
        assert text in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--saturation", "3"], ["--saturation=", "[0.1, 1]"]),
        (["--storm-creates", "2.5"], ["--storm-creates=", "an integer in [2, 1000000]"]),
        (["--headroom", "lots"], ["--headroom=", "[1, 4]"]),
        (["--window", "soon"], ["--window", "90s, 30m, 24h"]),
        (["--limit", "db:5432"], ["--limit", "HOST:PORT=N"]),
    ],
)
def test_bad_threshold_names_parameter_and_range(
    args: list[str], names: list[str], doctor: _Doctor
) -> None:
    run = doctor(*args)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    for text in names:
        assert text in run.stderr


def test_toml_thresholds(tmp_path: Path, leaky_page: str, doctor: _Doctor) -> None:
    good = tmp_path / "ok.toml"
    good.write_text("[thresholds]\nleak_age = 600\n")
    run = doctor(leaky_page, "--thresholds", str(good), "--json")
    assert json.loads(run.stdout)["findings"] == []  # 120 s is below a 600 s leak age
    bad = tmp_path / "bad.toml"
    bad.write_text("[thresholds]\nleak_agee = 600\n")
    run = doctor(leaky_page, "--thresholds", str(bad))
    assert run.returncode == 2 and "leak_agee" in run.stderr and "a threshold name" in run.stderr


def test_backend_credentials_never_shown(leaky_page: str, doctor: _Doctor) -> None:
    run = doctor(leaky_page, "--backend", "postgresql://app:s3cr3t-pw@127.0.0.1:1/db", "--json")
    assert "s3cr3t-pw" not in run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert any(p["down"] and "127.0.0.1:1" in p["source"] for p in doc["problems"])
    assert doc["pools"] == 1


def test_help_has_exit_status_section(doctor: _Doctor) -> None:
    run = doctor("--help")
    assert run.returncode == 0
    assert "Exit status:" in run.stdout
    for line in (
        "0  no finding at or above --fail-on",
        "1  findings at or above --fail-on",
        "2  bad usage",
    ):
        assert line in run.stdout
