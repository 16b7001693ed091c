"""``poolmon serve``: the process, its flags and its /metrics endpoint."""

from __future__ import annotations

import urllib.request

import pytest

from poolmon.backends import serve
from poolmon.cli import main
from poolmon.core.clock import ManualClock
from tests.support.pgbouncer import PgBouncer


def test_help_has_an_exit_status_section(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "Exit status:" in out and "--pgbouncer DSN" in out and "--backend DSN|URL" in out


@pytest.mark.parametrize(
    ("argv", "parameter", "accepted"),
    [
        (["--backend", "redis://127.0.0.1:6379", "--interval", "0"], "--interval", "[1, 86400]"),
        (["--backend", "redis://127.0.0.1:6379", "--port", "70000"], "--port", "[0, 65535]"),
        (["--backend", "redis://127.0.0.1:6379", "--duration", "-1"], "--duration", "(0,"),
        ([], "--pgbouncer/--backend", "at least one"),
        (["--backend", "ftp://h/x"], "--backend", "a Redis URL"),
    ],
)
def test_bad_flags_are_one_line_naming_the_parameter_and_range(
    argv: list[str], parameter: str, accepted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert parameter in err and accepted in err


def test_serve_exposes_sources_and_keeps_serving_when_one_is_down(
    bouncer: PgBouncer, pg_dsn: str, redis_url: str
) -> None:
    with serve(
        [bouncer.admin_dsn], [pg_dsn, redis_url], port=0, background=False, clock=ManualClock()
    ) as server:
        server.poller.poll_once()
        body = urllib.request.urlopen(server.url, timeout=10).read().decode()
        assert f'backend_up{{backend_name="pgbouncer://127.0.0.1:{bouncer.port}"' in body
        assert 'backend_connection_limit{backend_name="postgresql://127.0.0.1:5432"' in body
        bouncer.stop()
        server.poller.poll_once(force=True)
        body = urllib.request.urlopen(server.url, timeout=10).read().decode()
        up = {
            line.split('backend_name="')[1].split('"')[0]: line.rsplit(" ", 1)[1]
            for line in body.splitlines()
            if line.startswith("backend_up{")
        }
        assert up == {
            f"pgbouncer://127.0.0.1:{bouncer.port}": "0.0",
            "postgresql://127.0.0.1:5432": "1.0",
            "redis://127.0.0.1:6379": "1.0",
        }


def test_serve_once_exit_status(pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", pg_dsn, "--once"]) == 0
    assert "backend_connection_usage{" in capsys.readouterr().out


def test_serve_process_runs_for_its_duration_and_exits_0(pg_dsn: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "poolmon", "serve", "--backend", pg_dsn, "--port", "0",
         "--duration", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "postgresql://127.0.0.1:5432 on http://127.0.0.1:" in done.stderr
