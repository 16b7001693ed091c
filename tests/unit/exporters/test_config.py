"""ExporterConfig from the environment, and start_exporters."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from poolmon.core import PoolRegistry
from poolmon.errors import ConfigError
from poolmon.exporters.config import ExporterConfig, start_exporters
from tests.unit.exporters.workload import PG_URL


def test_defaults_from_empty_environment() -> None:
    config = ExporterConfig.from_env({})
    assert config == ExporterConfig()
    assert config.exporters == ()
    assert (config.port, config.addr) == (9464, "127.0.0.1")


def test_every_variable_is_read() -> None:
    config = ExporterConfig.from_env(
        {
            "POOLMON_EXPORTERS": " prometheus, OTLP ,jsonl",
            "POOLMON_PROMETHEUS_PORT": "0",
            "POOLMON_PROMETHEUS_ADDR": "0.0.0.0",
            "POOLMON_OTLP_ENDPOINT": "http://collector:4318",
            "POOLMON_JSONL_PATH": "/tmp/x.jsonl",
            "POOLMON_SEMCONV": "true",
            "POOLMON_LEAK_THRESHOLD": "2.5",
            "POOLMON_MULTIPROC_DIR": "/tmp/mp",
        }
    )
    assert config.exporters == ("prometheus", "otlp", "jsonl")
    assert config.port == 0
    assert config.addr == "0.0.0.0"
    assert config.otlp_endpoint == "http://collector:4318"
    assert config.jsonl_path == "/tmp/x.jsonl"
    assert config.semconv is True
    assert config.leak_threshold == 2.5
    assert config.multiprocess_dir == "/tmp/mp"


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("POOLMON_EXPORTERS", "prometheus,statsd", "prometheus, otlp, jsonl"),
        ("POOLMON_PROMETHEUS_PORT", "99999", "[0, 65535]"),
        ("POOLMON_PROMETHEUS_PORT", "http", "[0, 65535]"),
        ("POOLMON_SEMCONV", "maybe", "true/false"),
        ("POOLMON_LEAK_THRESHOLD", "-1", "> 0"),
        ("POOLMON_LEAK_THRESHOLD", "soon", "> 0"),
        ("POOLMON_EXPORTERS", ",", "prometheus, otlp, jsonl"),  # names nothing: a typo
        ("POOLMON_PROMETHEUS_ADDR", "not an address", "an IP address or a host name"),
        ("POOLMON_PROMETHEUS_ADDR", "127.0.0.1:80", "an IP address or a host name"),
        ("POOLMON_OTLP_ENDPOINT", "http://[::1", "http(s) URL"),
        ("POOLMON_OTLP_ENDPOINT", "http://collector:99999", "http(s) URL"),
        ("POOLMON_OTLP_ENDPOINT", "ftp://collector", "http(s) URL"),
    ],
)
def test_bad_values_name_the_variable_and_range(variable: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExporterConfig.from_env({variable: value})
    assert info.value.parameter == variable
    assert accepted in str(info.value)
    assert variable in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("POOLMON_PROMETHEUS_ADDR", "0.0.0.0"),
        ("POOLMON_PROMETHEUS_ADDR", "::1"),
        ("POOLMON_PROMETHEUS_ADDR", "metrics-host.internal"),
        ("POOLMON_OTLP_ENDPOINT", "collector:4317"),  # gRPC's host:port
        ("POOLMON_OTLP_ENDPOINT", "https://[::1]:4318"),
        ("POOLMON_OTLP_ENDPOINT", "unix:///run/otel.sock"),
        ("POOLMON_EXPORTERS", " "),  # blank: not set
    ],
)
def test_usable_values_are_accepted(variable: str, value: str) -> None:
    ExporterConfig.from_env({variable: value})


def test_start_prometheus_and_jsonl_then_close(tmp_path: Path, registry: PoolRegistry) -> None:
    from poolmon.core.identity import identity_from_url

    path = tmp_path / "events.jsonl"
    config = ExporterConfig(exporters=("prometheus", "jsonl"), port=0, jsonl_path=str(path))
    with start_exporters(config) as exporters:
        assert exporters.prometheus_url is not None
        ledger = registry.register(identity_from_url(PG_URL), max_size=2)
        conn = ledger.create(ledger.now())
        ledger.borrow(conn)
        with urllib.request.urlopen(exporters.prometheus_url, timeout=10) as resp:
            body = resp.read().decode()
        assert 'pool_connection_usage{pool_connection_state="used"' in body
        url = exporters.prometheus_url
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
    kinds = [json.loads(line)["kind"] for line in path.read_text().splitlines()]
    assert kinds[:3] == ["open", "create", "borrow"]
    ledger.release(conn)  # after close: no longer written
    assert len(path.read_text().splitlines()) == len(kinds)
    assert "s3cret" not in path.read_text()


def test_leak_threshold_reports_leaks(registry: PoolRegistry) -> None:
    from poolmon.core import ManualClock
    from poolmon.core.identity import identity_from_url

    clock = ManualClock()
    ledger = registry.register(identity_from_url(PG_URL), clock=clock)
    conn = ledger.create(clock.monotonic())
    ledger.borrow(conn)
    clock.advance(10.0)
    with start_exporters(ExporterConfig(leak_threshold=0.05)):
        # Poll real state with a deadline: the watchdog runs every threshold/2.
        import time

        deadline = time.monotonic() + 10
        while ledger.snapshot().errors["leak_suspected"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert ledger.snapshot().errors["leak_suspected"] == 1
