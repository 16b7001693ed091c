"""Garbage where ``top`` reads other programs' output: a /metrics page, a Prometheus API answer,
a JSONL event log. The source is shown as bad with the reason, or read as far as it is good;
it never raises, and the other sources of the same refresh keep working."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import MetricsServer, PoolmonCollector
from poolmon.top.app import fetch_all
from poolmon.top.model import TopModel
from poolmon.top.sources import MetricsUrlSource, PrometheusSource, ReplaySource, Source
from tests.fuzz.conftest import FUZZ, GOOD_POOL
from tests.fuzz.strategies import NON_UTF8


def _page() -> str:
    registry = PoolRegistry()
    ledger = registry.register(identity_from_url("redis://cache:6379/0"), max_size=4)
    conn = ledger.create(ledger.now())
    ledger.borrow(conn)
    scrape = CollectorRegistry()
    scrape.register(PoolmonCollector(registry))
    return generate_latest(scrape).decode()


PAGE = _page()
LINES = PAGE.splitlines()

garbage_lines = st.one_of(
    st.sampled_from(
        [
            "<html><body>502 Bad Gateway</body></html>",
            "# TYPE pool_connection_usage histogram",
            "# TYPE pool_connection_usage",
            'pool_connection_usage{pool_name="p" 1',
            'pool_connection_usage{pool_name="p"} not-a-number',
            'pool_connection_usage{pool_name="p"} NaN',
            'pool_connection_usage{pool_name="p"} +Inf',
            'pool_connection_usage{pool_name="'
            + "x" * 100_000
            + '",pool_connection_state="used"} 1',
            'pool_connection_max{pool_name="' + NON_UTF8 + '"} 5',
            'pool_connection_max{pool_name="a\\"b\\\\c"} 5',
            "pool_connection_max 7",
            "{}",
            "\x00\x01\x02",
            "",
        ]
    ),
    st.text(max_size=80),
)


@st.composite
def mangled_pages(draw: st.DrawFn) -> tuple[str, bool]:
    """A real page mangled; True when every line of the original page is still there."""
    lines = list(LINES)
    intact = True
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["insert", "duplicate", "truncate", "replace"]))
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if action == "insert":
            lines.insert(at, draw(garbage_lines))
        elif action == "duplicate":
            lines.insert(at, lines[at])
        elif action == "truncate":
            lines = [*lines[:at], lines[at][: draw(st.integers(0, len(lines[at])))]]
            intact = False
        else:
            lines[at] = draw(garbage_lines)
            intact = False
    return "\n".join(lines) + "\n", intact


@FUZZ
@given(mangled_pages())
def test_a_mangled_metrics_page_never_raises_and_keeps_good_series(page: tuple[str, bool]) -> None:
    text, intact = page
    source = MetricsUrlSource("http://127.0.0.1:1/metrics")
    result = source.parse(text, 1.0)
    if result.ok:
        names = [p.name for p in result.pools]
        if intact:
            assert GOOD_POOL in names
    else:
        assert result.error and "\n" not in result.error
    TopModel().update([result])  # the model takes whatever the source made of it


def test_an_html_page_is_a_bad_source_with_the_reason() -> None:
    result = MetricsUrlSource("http://127.0.0.1:1/").parse("<!DOCTYPE html>\n<html></html>\n", 1.0)
    assert not result.ok and result.error is not None and "not a Prometheus" in result.error


prom_answers = st.one_of(
    st.sampled_from(
        [
            b'{"status":"error","errorType":"bad_data","error":"parse error at char 1"}',
            b'{"status":"success","data":{"resultType":"vector","result":[]}}',
            b"<html><body>Prometheus is starting</body></html>",
            b"",
            b"null",
            b"[]",
            b'{"status":"success"}',
            b'{"status":"success","data":{"result":{}}}',
            b'{"status":"success","data":{"result":[{"metric":{},"value":[1,"x"]}]}}',
            b'{"status":"success","data":{"result":[{"metric":{"pool_name":1},"value":[1]}]}}',
            b'{"status":"success","data":{"result":[{"metric":{"__name__":"pool_connection_max",'
            b'"pool_name":"p","instance":"a"},"value":[1,"NaN"]}]}}',
            b"[" * 100_000,
            NON_UTF8.encode("utf-8", "surrogateescape"),
        ]
    ),
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=10,
    ).map(lambda doc: json.dumps({"status": "success", "data": {"result": doc}}).encode()),
)


@FUZZ
@given(prom_answers)
def test_any_prometheus_answer_is_read_or_shown_bad(body: bytes) -> None:
    source = PrometheusSource("http://127.0.0.1:1", getter=lambda url, timeout, accept: body)
    results = source.fetch()
    assert results, "a Prometheus source always reports something"
    for result in results:
        if not result.ok:
            assert result.error and "\n" not in result.error
    TopModel().update(results)


def test_a_prometheus_error_answer_is_shown_with_its_reason_on_one_line() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"parse error:\\nunexpected"}'
    (result,) = PrometheusSource("prom:9090", getter=lambda *a: body).fetch()
    assert not result.ok and result.error == "query failed: parse error: unexpected"


def test_an_empty_prometheus_is_up_with_no_pools() -> None:
    empty = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    (result,) = PrometheusSource("prom:9090", getter=lambda *a: empty).fetch()
    assert result.ok and result.pools == () and result.source == "http://prom:9090"


_EVENT = (
    '{"v":"1.0","kind":"create","ts":%d.0,"pool":"redis://cache:6379/0","pid":7,'
    '"conn":1,"duration":0.001,"outcome":"ok"}'
)

jsonl_garbage = st.one_of(
    st.sampled_from(
        [
            "{",
            "[]",
            "null",
            '{"kind":"create"}',
            '{"v":"1.0","kind":"borrow","ts":"yesterday","pool":{"name":"p"}}',
            '{"v":"1.0","kind":"evict","ts":1e400,"pool":{"name":"p"},"conn":1}',
            '{"v":"1.0","kind":"create","ts":1,"pool":{"name":["p"]},"conn":{}}',
            '{"v":"1.0","kind":"create","ts":1,"pool":["p"],"conn":1}',
            '{"v":"1.0","kind":"create","ts":1e999,"pool":"p","conn":1}',
            "[" * 50_000,
            "x" * 200_000,
        ]
    ),
    st.text(max_size=60).filter(lambda t: "\n" not in t),
)


@FUZZ
@given(st.lists(jsonl_garbage, max_size=5), st.binary(max_size=20))
def test_a_garbage_event_log_is_read_or_shown_bad(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    good = [_EVENT % 1700000000]
    body = "\n".join([*lines, *good, *lines]).encode("utf-8", "surrogateescape")
    path.write_bytes(body + b"\n" + raw.replace(b"\n", b"") + b"\n")
    (result,) = ReplaySource(path).fetch()
    assert result.ok, result.error  # one good event among the garbage: read, garbage skipped
    assert [p.name for p in result.pools] == [GOOD_POOL]


def test_an_event_log_of_garbage_only_is_a_bad_source(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("not json\n{}\n")
    (result,) = ReplaySource(path).fetch()
    assert not result.ok and result.error is not None and "line 1" in result.error


class _Garbage(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    body = b""
    content_type = "text/plain"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def garbage_server() -> Iterator[type[_Garbage]]:
    handler = type("Handler", (_Garbage,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>login required</body></html>", "text/html"),
        (PAGE.encode()[: len(PAGE) // 2], "text/plain"),  # truncated mid-page
        (b"\xff\xfe" + PAGE.encode(), "text/plain"),
        (b'{"status":"error","error":"no"}', "application/json"),
    ],
)
def test_real_http_garbage_beside_a_good_source(
    garbage_server: type[_Garbage], good_source: MetricsServer, body: bytes, content_type: str
) -> None:
    garbage_server.body, garbage_server.content_type = body, content_type
    url = garbage_server.url  # type: ignore[attr-defined]
    sources: list[Source] = [
        MetricsUrlSource(url + "/metrics", timeout=2),
        PrometheusSource(url, timeout=2),
        MetricsUrlSource(good_source.url, timeout=2),
    ]
    frame = TopModel().update(fetch_all(sources, timeout=5))
    assert GOOD_POOL in [r.name for r in frame.rows if r.source == good_source.url]
    for status in frame.sources:
        assert status.ok or (status.error and "\n" not in status.error)
