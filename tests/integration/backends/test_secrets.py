"""No credential of an admin DSN or backend URL reaches any output: metrics, logs, errors, the
``poolmon serve`` process's output, or the ``top`` screen (spec section 8 and 12.2)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import psycopg
import pytest
from rich.console import Console

from poolmon.backends import PgBouncerReader, Poller, readers_for
from poolmon.top.app import print_once
from poolmon.top.model import TopModel
from poolmon.top.sources import MetricsUrlSource
from poolmon.top.state import ViewState
from poolmon.top.view import screen
from tests.integration.backends.helpers import Exposition
from tests.support.pgbouncer import ADMIN_PASSWORD, PgBouncer
from tests.support.prometheus import free_port

SECRETS = ("Wr0ng-i19-pass", "pg-i19-s3cret", "redis-i19-t0ken", "redis-i19-pw2", ADMIN_PASSWORD)


def _targets(bouncer: PgBouncer) -> tuple[list[str], list[str]]:
    closed = free_port()
    pgbouncer = [
        bouncer.admin_dsn,  # good: key=value with its password
        bouncer.admin_url("Wr0ng-i19-pass"),  # wrong password, URL form
    ]
    backends = [
        f"postgresql://postgres:pg-i19-s3cret@127.0.0.1:{closed}/postgres",  # refused
        "redis://:redis-i19-t0ken@127.0.0.1:6379/0",  # a password the server does not expect
        f"redis://u:redis-i19-pw2@127.0.0.1:{closed}/0",  # refused
    ]
    return pgbouncer, backends


def _assert_clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_no_credential_in_metrics_logs_errors_or_top(
    bouncer: PgBouncer, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pgbouncer, backends = _targets(bouncer)
    good, wrong = pgbouncer
    readers = [*readers_for([good], backends), PgBouncerReader(wrong, name="pgbouncer-wrong")]
    with Poller(readers) as poller, psycopg.connect(bouncer.client_dsn()) as client:
        client.execute("SELECT 1")  # a client of the proxy: its pool shows in SHOW POOLS
        client.rollback()
        exposition = Exposition(poller)
        poller.poll_once(force=True)
        snaps = poller.snapshot()
        # (The password-bearing Redis URL to a server without auth may be up or refused: either
        # way its password must not leak.)
        assert [snaps[i].up for i in (0, 1, 3, 4)] == [True, False, False, False]
        kinds = [(snaps[i].last_error or "").split(":")[0] for i in (1, 3, 4)]
        assert kinds == ["connect", "connect", "auth"]
        text = exposition.text()
        _assert_clean(text, "the exposition")
        _assert_clean(caplog.text, "the logs")
        _assert_clean(repr(snaps), "the snapshots and their errors")
        # top, over the same page: the live screen and --once text and JSON.
        frame = TopModel().update([MetricsUrlSource("127.0.0.1:1").parse(text, 1.0)])
        console = Console(record=True, width=200, file=io.StringIO())
        state = ViewState()
        console.print(screen(frame, state, list(frame.rows), show_backends=True))
        print_once(frame, state, console=console)
        out = io.StringIO()
        print_once(frame, state, as_json=True, out=out)
        shown = console.export_text()
        _assert_clean(shown + out.getvalue(), "the top screen")
        assert "pgbouncer://127.0.0.1" in shown and "down" in shown


def test_serve_once_output_and_bad_flag_errors_carry_no_credential(bouncer: PgBouncer) -> None:
    pgbouncer, backends = _targets(bouncer)
    args = [sys.executable, "-m", "poolmon", "serve", "--once"]
    args += ["--pgbouncer", pgbouncer[1]]
    for target in backends:
        args += ["--backend", target]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # some sources are down
    assert "backend_up" in done.stdout
    _assert_clean(done.stdout + done.stderr, "poolmon serve --once")
    bad = subprocess.run(
        [sys.executable, "-m", "poolmon", "serve", "--backend", "mysql://u:pg-i19-s3cret@h/db"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--backend" in bad.stderr and "Traceback" not in bad.stderr
    _assert_clean(bad.stdout + bad.stderr, "a bad --backend error")
