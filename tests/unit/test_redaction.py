"""The secrets rule: no credential reaches an identity, event, JSONL line, log line or message.

Each corpus entry is a way applications hand credentials to pools. For each one the test builds an
identity from it, records a pool life on a ledger whose errors echo the credential-bearing string
(drivers do: "connection to <dsn> failed"), lets a subscriber fail with it (logged once), and then
searches every output for the secret, raw and percent-encoded.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest

from poolmon.core.clock import ManualClock
from poolmon.core.events import PoolEvent
from poolmon.core.identity import (
    PoolIdentity,
    identity_from_kwargs,
    identity_from_libpq_dsn,
    identity_from_url,
)
from poolmon.core.redact import (
    MASK,
    forget_secrets,
    redact_dsn,
    redact_mapping,
    redact_url,
    scrub,
)
from poolmon.core.registry import PoolRegistry
from poolmon.core.sinks import JsonlSink
from poolmon.errors import ConfigError


@dataclass(frozen=True)
class Case:
    id: str
    text: str  # the credential-bearing string a driver might echo in an error
    secrets: tuple[str, ...]
    identity: Callable[[], PoolIdentity]


def _case(id: str, text: str, secrets: tuple[str, ...], make: Callable[[], PoolIdentity]) -> Case:
    return Case(id, text, secrets, make)


_KV = "host=db.internal port=5433 dbname=orders user=app password='pa ss w0rd!'"
_KV_PLAIN = "host=db.internal dbname=orders user=app password=Plain-Pw-77 sslmode=require"
_PG_URL = "postgresql://app:pg-S3cret@db.internal:5432/orders?sslmode=require"
_PG_ENC = "postgresql://app:p%40ss%3Aw0rd%2F@db.internal/orders"
_REDIS = "redis://default:redis-pw-123@cache.internal:6379/2"
_REDISS = "rediss://:tok3n-abcdef@cache.internal:6380/0"
_HTTP = "https://alice:hunter2-http@api.example.com/v1/items"
_KWARGS = {"host": "cache.internal", "port": 6379, "db": 1, "password": "kw-Secret-9",
           "username": "svc"}  # fmt: skip

# fmt: off
CORPUS = [
    _case("libpq-kv-quoted-space", f'connection to "{_KV}" failed', ("pa ss w0rd!",),
          lambda: identity_from_libpq_dsn(_KV)),
    _case("libpq-kv-plain", f"could not connect: {_KV_PLAIN}", ("Plain-Pw-77",),
          lambda: identity_from_libpq_dsn(_KV_PLAIN)),
    _case("postgresql-url", f"connection to {_PG_URL} failed", ("pg-S3cret",),
          lambda: identity_from_libpq_dsn(_PG_URL)),
    _case("percent-encoded", f"bad dsn {_PG_ENC}", ("p@ss:w0rd/", "p%40ss%3Aw0rd%2F"),
          lambda: identity_from_url(_PG_ENC)),
    _case("redis-url", f"Error connecting to {_REDIS}", ("redis-pw-123",),
          lambda: identity_from_url(_REDIS)),
    _case("rediss-token", f"AUTH failed for {_REDISS}", ("tok3n-abcdef",),
          lambda: identity_from_url(_REDISS)),
    _case("password-kwarg", f"Connection({_KWARGS!r}) refused", ("kw-Secret-9",),
          lambda: identity_from_kwargs("redis", _KWARGS)),
    _case("libpq-kwarg-override", "FATAL: password authentication failed (kwpass-42x)",
          ("kwpass-42x",),
          lambda: identity_from_libpq_dsn("host=db dbname=x", {"password": "kwpass-42x"})),
    _case("http-basic-auth-url", f"GET {_HTTP} -> 401", ("hunter2-http",),
          lambda: identity_from_url(_HTTP)),
    _case("authorization-header", "headers={'Authorization': 'Basic YWxpY2U6aHVudGVyMg=='}",
          ("YWxpY2U6aHVudGVyMg==",), lambda: identity_from_url("https://api.example.com")),
    _case("bearer-header", "Authorization: Bearer eyJhbGciOi.payload.sig failed",
          ("eyJhbGciOi.payload.sig",), lambda: identity_from_url("http://api:8080")),
    _case("proxy-header", "proxy_headers={'Proxy-Authorization': 'Basic cHJveHk6cHc='}",
          ("cHJveHk6cHc=",), lambda: identity_from_url("http://api:8080")),
    _case("env-style", "PGPASSWORD=env-Pw-31 psql failed", ("env-Pw-31",),
          lambda: identity_from_url("postgresql://db/orders")),
    _case("json-repr", '{"user": "app", "password": "json pw 8"}', ("json pw 8",),
          lambda: identity_from_url("postgresql://db/orders")),
]
# fmt: on


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    forget_secrets()  # each case must stand on its own, not on secrets another case taught
    yield
    forget_secrets()


def _forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), json.dumps(secret)[1:-1]}


def _assert_absent(text: str, case: Case, where: str) -> None:
    for secret in case.secrets:
        for form in _forms(secret):
            assert form not in text, f"{case.id}: {form!r} leaked into {where}: {text[:300]!r}"


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_secret_reaches_no_output(case: Case, caplog: pytest.LogCaptureFixture) -> None:
    ident = case.identity()
    _assert_absent(repr(ident), case, "the identity")
    _assert_absent(json.dumps(ident.as_attributes()), case, "pool.info attributes")

    clock = ManualClock()
    registry = PoolRegistry(clock=clock)
    stream = io.StringIO()
    seen: list[PoolEvent] = []
    registry.subscribe(JsonlSink(stream))
    registry.subscribe(seen.append)

    def failing_subscriber(event: PoolEvent) -> None:
        raise RuntimeError(f"sink broke while writing to {case.text}")

    failing_subscriber.__qualname__ = f"failing_subscriber_{case.id}"  # log_once key per case
    registry.subscribe(failing_subscriber)
    ledger = registry.register(ident, max_size=2)
    with caplog.at_level(logging.WARNING, logger="poolmon"):
        ledger.create_failed(clock.monotonic(), ConnectionError(case.text))
        conn = ledger.create(clock.monotonic())
        ledger.borrow(conn)
        ledger.error("reset_failed", "reset", case.text, conn=conn)
        ledger.release(conn)
        ledger.validate(conn, clock.monotonic(), ok=False)
        ledger.evict(conn, "failed_validation")
        ledger.error("other", "close", OSError(case.text))
        ledger.close()

    messages = [e.message for e in seen if e.message]
    assert len(messages) == 3 and all(MASK in m for m in messages), messages
    _assert_absent(stream.getvalue(), case, "the JSONL stream")
    _assert_absent(repr(seen), case, "event objects")
    _assert_absent(json.dumps([e.to_dict() for e in seen]), case, "event dicts")
    assert caplog.records, "the failing subscriber must be logged once"
    _assert_absent(caplog.text, case, "the log")
    _assert_absent(repr(ledger.snapshot()), case, "the snapshot")


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_scrub_is_idempotent(case: Case) -> None:
    case.identity()  # parsing the target is what teaches scrub a bare secret (kwargs case)
    once = scrub(case.text)
    _assert_absent(once, case, "scrub()")
    assert scrub(once) == once


def test_redact_helpers() -> None:
    assert redact_url(_PG_URL) == "postgresql://db.internal:5432/orders?sslmode=require"
    assert redact_url(_HTTP) == "https://api.example.com/v1/items"
    assert redact_url("https://api.example.com/cb?token=abc123&x=1") == (
        f"https://api.example.com/cb?token={MASK}&x=1"
    )
    assert redact_dsn(_KV) == f"host=db.internal port=5433 dbname=orders user=app password={MASK}"
    assert redact_mapping(_KWARGS) == {**_KWARGS, "password": MASK}


def test_known_secret_is_removed_from_unstructured_text() -> None:
    # A driver message that quotes only the password, with no key=value around it, is caught by
    # remembering secrets when poolmon parsed them.
    identity_from_libpq_dsn("host=db password=Unstructured-77")
    assert scrub("server said: bad credential Unstructured-77.") == (
        f"server said: bad credential {MASK}."
    )


def test_free_text_does_not_teach_scrub_to_mask_ordinary_words() -> None:
    assert scrub("invalid token: expired") == f"invalid token: {MASK}"
    assert scrub("the session expired") == "the session expired"


def test_config_error_message_has_no_secret() -> None:
    error = ConfigError("POOLMON_OTLP_ENDPOINT", "https://user:otlp-tok-55@collector:4318", "a URL")
    assert "otlp-tok-55" not in str(error)


def test_user_given_name_is_scrubbed() -> None:
    ident = identity_from_url(_PG_URL, name="orders via postgresql://app:pg-S3cret@db/orders")
    assert "pg-S3cret" not in ident.name
    assert re.fullmatch(r"orders via postgresql://\*\*\*@db/orders", ident.name)
