"""The over-commit finding reads the limit ``poolmon serve`` polled from the backend itself."""

from __future__ import annotations

from typing import Any

from poolmon.doctor.backend import limits_from_backend_samples, limits_from_prometheus
from poolmon.doctor.model import BackendLimit
from poolmon.top.capacity import BackendSample


def test_polled_backend_samples_give_limits_less_the_reserved() -> None:
    samples = [
        BackendSample(
            "postgresql://10.0.0.9:5432", "postgresql", up=True, used=23, limit=100, reserved=3
        ),
        BackendSample(
            "redis://10.0.0.7:6379", "redis", up=True, used=4, limit=10000, reserved=None
        ),
        BackendSample(
            "postgresql://10.0.0.8:5432",
            "postgresql",
            up=False,
            used=None,
            limit=None,
            reserved=None,
        ),
        BackendSample(
            "pgbouncer://10.0.0.5:6432", "pgbouncer", up=True, used=20, limit=1000, reserved=None
        ),
    ]
    limits = limits_from_backend_samples(samples)
    assert [(lim.system, lim.backend, lim.limit) for lim in limits] == [
        ("postgresql", "10.0.0.9:5432", 97),
        ("redis", "10.0.0.7:6379", 10000),
    ]
    assert "poolmon serve" in limits[0].origin


def test_polled_series_in_prometheus_give_limits() -> None:
    answers: dict[str, list[dict[str, Any]]] = {
        "backend_connection_limit": [
            {
                "metric": {"backend_name": "postgresql://db:5432", "backend_system": "postgresql"},
                "value": [0, "100"],
            },
            {
                "metric": {"backend_name": "pgbouncer://pgb:6432", "backend_system": "pgbouncer"},
                "value": [0, "1000"],
            },
        ],
        "backend_connection_reserved": [
            {
                "metric": {"backend_name": "postgresql://db:5432", "backend_system": "postgresql"},
                "value": [0, "3"],
            }
        ],
    }
    limits = limits_from_prometheus(lambda q: answers.get(q, []))
    assert limits == [
        BackendLimit(
            "postgresql",
            "db:5432",
            97,
            "backend_connection_limit 100 - 3 reserved (poolmon serve)",
        )
    ]
