"""Faults: each source that fails is down, counted and logged once per window; the others keep
being served; recovery is automatic. Driven by ``poll_once()`` on a manual clock, never sleeps.
"""

from __future__ import annotations

import logging

import pytest

from poolmon.backends import PgBouncerReader, Poller, PostgresReader, RedisReader
from poolmon.core.clock import ManualClock
from tests.integration.backends.helpers import Exposition
from tests.support.pgbouncer import ADMIN_PASSWORD, PgBouncer
from tests.support.prometheus import free_port

INTERVAL = 10.0
WINDOW = 300.0


def _down_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if name in r.getMessage() and "down" in r.getMessage()
    ]


def _poller(*readers: object, clock: ManualClock) -> Poller:
    return Poller(readers, interval=INTERVAL, log_window=WINDOW, clock=clock)  # type: ignore[arg-type]


def test_pgbouncer_stopped_mid_run_then_restarted(
    bouncer: PgBouncer, pg_dsn: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poolmon.backends")
    clock = ManualClock()
    pgb = PgBouncerReader(bouncer.admin_dsn)
    poller = _poller(pgb, PostgresReader(pg_dsn), RedisReader(redis_url), clock=clock)
    exposition = Exposition(poller)
    with poller:
        poller.poll_once()
        assert exposition.value("backend_up", backend_name=pgb.name) == 1
        bouncer.stop()
        for _ in range(6):  # keep polling through the outage, backoff permitting
            clock.advance(INTERVAL * 8)
            poller.poll_once()
        e = exposition.value
        assert e("backend_up", backend_name=pgb.name) == 0
        failures = e("backend_poll_errors_total", backend_name=pgb.name, error_type="connect")
        assert failures is not None and failures >= 1
        # Stale numbers do not look live: the down proxy's limit is gone, the others are served.
        assert e("backend_connection_limit", backend_name=pgb.name) is None
        assert e("backend_up", backend_system="postgresql") == 1
        assert e("backend_up", backend_system="redis") == 1
        assert e("backend_connection_limit", backend_system="postgresql") is not None
        # One line when it went down; the next only once the window has passed.
        lines = _down_lines(caplog, pgb.name)
        assert 1 <= len(lines) <= 2, lines
        assert len(lines) == 1 + int(6 * INTERVAL * 8 >= WINDOW)
        bouncer.start()
        clock.advance(INTERVAL * 10)  # past any backoff
        poller.poll_once()
        assert e("backend_up", backend_name=pgb.name) == 1
        assert e("backend_connection_limit", backend_name=pgb.name) == 60
        assert any("up again" in r.getMessage() for r in caplog.records)


def test_backoff_skips_a_down_source_until_it_is_due(pg_dsn: str) -> None:
    clock = ManualClock()
    refused = PostgresReader(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    poller = _poller(refused, PostgresReader(pg_dsn), clock=clock)
    with poller:
        for _ in range(3):
            poller.poll_once(force=True)  # three failures in a row: the next wait is 4 intervals
        snap = {s.name: s for s in poller.snapshot()}
        assert snap[refused.name].errors["connect"] == 3
        clock.advance(INTERVAL * 2)
        poller.poll_once()
        snap = {s.name: s for s in poller.snapshot()}
        assert snap[refused.name].errors["connect"] == 3  # not due yet: backoff
        assert snap["postgresql://127.0.0.1:5432"].polls == 4  # the healthy one still polled
        clock.advance(INTERVAL * 2)
        poller.poll_once()
        assert {s.name: s for s in poller.snapshot()}[refused.name].errors["connect"] == 4


def test_postgres_connection_refused_is_down_and_counted(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poolmon.backends")
    clock = ManualClock()
    port = free_port()  # nothing listens there: connection refused
    refused = PostgresReader(f"postgresql://postgres:pw-i19-secret@127.0.0.1:{port}/postgres")
    poller = _poller(refused, PostgresReader(pg_dsn), clock=clock)
    exposition = Exposition(poller)
    with poller:
        for _ in range(5):
            poller.poll_once(force=True)
        e = exposition.value
        assert e("backend_up", backend_name=refused.name) == 0
        assert e("backend_poll_errors_total", backend_name=refused.name, error_type="connect") == 5
        assert e("backend_poll_errors_total", backend_name=refused.name, error_type="auth") == 0
        assert e("backend_up", backend_name="postgresql://127.0.0.1:5432") == 1
        assert len(_down_lines(caplog, refused.name)) == 1
        clock.advance(WINDOW)
        poller.poll_once(force=True)
        assert len(_down_lines(caplog, refused.name)) == 2  # one line per window
        assert "pw-i19-secret" not in caplog.text and "pw-i19-secret" not in exposition.text()


def test_wrong_admin_password_is_an_auth_error_and_recovers(
    bouncer: PgBouncer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="poolmon.backends")
    clock = ManualClock()
    wrong = PgBouncerReader(bouncer.admin_url("Wr0ng-i19-password"))
    poller = _poller(wrong, clock=clock)
    exposition = Exposition(poller)
    with poller:
        poller.poll_once(force=True)
        poller.poll_once(force=True)
        e = exposition.value
        assert e("backend_up", backend_name=wrong.name) == 0
        assert e("backend_poll_errors_total", backend_name=wrong.name, error_type="auth") == 2
        assert len(_down_lines(caplog, wrong.name)) == 1
        text = caplog.text + exposition.text()
        assert "Wr0ng-i19-password" not in text and ADMIN_PASSWORD not in text
        # The operator fixes the password (same proxy, same name): the next poll is up.
        wrong._dsn = bouncer.admin_url()
        clock.advance(INTERVAL * 4)
        poller.poll_once()
        assert e("backend_up", backend_name=wrong.name) == 1
