"""The poller's rules with scripted readers (logic only; real sources are in tests/integration)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from poolmon.backends.classify import classify
from poolmon.backends.poller import Poller, readers_for
from poolmon.backends.readings import ConnectionGroup, Reading
from poolmon.core.clock import ManualClock
from poolmon.core.identity import identity_from_url
from poolmon.core.redact import forget_secrets
from poolmon.errors import ConfigError
from poolmon.exporters.backends import build_backend_families

URL = "postgresql://mon:Sup3r-i19-secret@db.example:5432/postgres"


@dataclass
class Scripted:
    """A reader that fails while ``failing`` is set, with an error that echoes its URL."""

    name: str = "postgresql://db.example:5432"
    system: str = "postgresql"
    address: str = "db.example"
    port: int | None = 5432
    failing: bool = False
    reads: int = 0
    closed: bool = False
    groups: tuple[ConnectionGroup, ...] = field(
        default_factory=lambda: (ConnectionGroup("active", "app", "10.0.0.1", 3),)
    )

    def __post_init__(self) -> None:
        identity_from_url(URL)  # as a real reader does: the password becomes a known secret

    def read(self) -> Reading:
        self.reads += 1
        if self.failing:
            raise ConnectionRefusedError(f"connection to {URL} refused")
        return Reading(groups=self.groups, limit=100, reserved=3)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    yield
    forget_secrets()


def test_down_drops_the_reading_counts_backs_off_and_logs_once_per_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="poolmon.backends")
    clock = ManualClock()
    reader = Scripted()
    poller = Poller([reader], interval=10, max_backoff=40, log_window=100, clock=clock)
    poller.poll_once()
    assert poller.snapshot()[0].reading is not None
    reader.failing = True
    attempts = []
    for _ in range(30):  # 300 s of 10 s ticks
        clock.advance(10)
        before = reader.reads
        poller.poll_once()
        attempts.append(reader.reads - before)
    snap = poller.snapshot()[0]
    assert not snap.up and snap.reading is None
    # Backoff 10, 20, 40, 40, ...: far fewer attempts than ticks, and never more than 1 per tick.
    assert snap.errors["connect"] == sum(attempts) < 30 and max(attempts) == 1
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 3  # t=10, then once per 100 s window while still down
    assert "Sup3r-i19-secret" not in caplog.text and snap.last_error is not None
    assert "Sup3r-i19-secret" not in snap.last_error
    reader.failing = False
    clock.advance(40)
    poller.poll_once()
    assert poller.snapshot()[0].up
    assert "up again" in caplog.records[-1].getMessage()


def test_families_of_a_down_source_keep_only_up_and_errors() -> None:
    reader = Scripted(failing=True)
    poller = Poller([reader], clock=ManualClock())
    poller.poll_once()
    families = {f.spec.name: f for f in build_backend_families(poller.snapshot())}
    assert list(families["backend.up"].points.values()) == [0.0]
    assert not families["backend.connection.usage"].points
    assert not families["backend.connection.limit"].points
    assert len(families["backend.poll.errors"].points) == 5  # every error type, from zero
    reader.failing = False
    poller.poll_once(force=True)
    families = {f.spec.name: f for f in build_backend_families(poller.snapshot())}
    assert list(families["backend.connection.usage"].points.values()) == [3.0]
    assert list(families["backend.connection.reserved"].points.values()) == [3.0]


def test_a_poll_that_raises_anything_never_escapes() -> None:
    class Broken(Scripted):
        def read(self) -> Reading:
            raise RuntimeError("unexpected")

    poller = Poller([Broken()], clock=ManualClock())
    poller.poll_once()
    assert poller.snapshot()[0].errors["other"] == 1


def test_close_closes_every_reader() -> None:
    reader = Scripted()
    Poller([reader]).close()
    assert reader.closed


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [({"interval": 0}, "interval"), ({"interval": -1}, "interval"),
     ({"max_backoff": 1e9}, "max_backoff"), ({"log_window": -1}, "log_window")],
)  # fmt: skip
def test_bad_settings_name_the_parameter_and_range(
    kwargs: dict[str, float], parameter: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Poller([Scripted()], **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == parameter and "[" in str(info.value)


def test_a_source_named_twice_is_refused_and_unknown_schemes_named() -> None:
    with pytest.raises(ConfigError, match="named once"):
        Poller([Scripted(), Scripted()])
    with pytest.raises(ConfigError) as info:
        readers_for(backends=["mysql://u:Sup3r-i19-secret@h/db"])
    assert info.value.parameter == "--backend" and "Sup3r-i19-secret" not in str(info.value)


class _Auth(Exception):
    sqlstate = "28P01"


class AuthenticationError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError("refused"), "connect"),
        (TimeoutError("slow"), "timeout"),
        (_Auth("bad"), "auth"),
        (AuthenticationError("invalid username-password pair"), "auth"),
        (Exception('FATAL:  password authentication failed for user "x"'), "auth"),
        (ValueError("not a number"), "query"),
        (RuntimeError("?"), "other"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_the_background_thread_polls_until_closed() -> None:
    import threading

    polled = threading.Event()

    class Counting(Scripted):
        def read(self) -> Reading:
            reading = super().read()
            if self.reads >= 3:
                polled.set()
            return reading

    reader = Counting()
    poller = Poller([reader], interval=0.05).start()
    try:
        assert polled.wait(30), "the thread did not poll three times"
    finally:
        poller.close()
    reads = reader.reads
    assert reader.closed and poller.snapshot()[0].polls == reads  # nothing after close
