"""Bad configuration fails at construction, naming the parameter and the accepted range."""

from __future__ import annotations

from typing import Any

import pytest

from poolmon.core.registry import PoolRegistry
from poolmon.errors import ConfigError
from poolmon.pool import Pool, PoolConfig, TenantQuota, factory


@pytest.mark.parametrize(
    ("options", "parameter", "accepted"),
    [
        ({"max_size": 0}, "max_size", "an int >= 1"),
        ({"max_size": 2.5}, "max_size", "an int >= 1"),
        ({"min_size": -1}, "min_size", "an int >= 0"),
        ({"min_size": 5, "max_size": 2}, "min_size", "[0, max_size=2]"),
        ({"timeout": -1}, "timeout", ">= 0"),
        ({"timeout": float("nan")}, "timeout", "finite seconds"),
        ({"max_waiting": -1}, "max_waiting", "an int >= 0"),
        ({"order": "random"}, "order", "'lifo' or 'fifo'"),
        ({"handoff_after": -0.001}, "handoff_after", "finite seconds >= 0"),
        ({"handoff_after": None}, "handoff_after", "finite seconds >= 0"),
        ({"handoff_after": float("inf")}, "handoff_after", "finite seconds"),
        ({"max_lifetime": 0}, "max_lifetime", "> 0 or None"),
        ({"lifetime_jitter": 0.9}, "lifetime_jitter", "[0, 0.5]"),
        ({"idle_timeout": -5}, "idle_timeout", "> 0"),
        ({"validate_after": -0.1}, "validate_after", ">= 0"),
        ({"stack_sample_every": -1}, "stack_sample_every", ">= 0"),
        ({"maintenance_interval": 0}, "maintenance_interval", "> 0"),
        ({"backoff_initial": 2.0, "backoff_max": 1.0}, "backoff_max", ">= backoff_initial"),
        ({"backoff_jitter": 1.5}, "backoff_jitter", "[0, 1.0]"),
        # second wave: bursts, tenants, priorities, backpressure
        ({"max_size": 4, "burst_max": 4}, "burst_max", "an int >= max_size + 1 = 5, or None"),
        ({"max_size": 4, "burst_max": 2}, "burst_max", ">= max_size + 1 = 5"),
        ({"burst_max": 20, "burst_after": -1}, "burst_after", "finite seconds >= 0"),
        ({"burst_max": 20, "burst_queue": 0}, "burst_queue", "an int >= 1"),
        ({"burst_lifetime": 0}, "burst_lifetime", "finite seconds > 0"),
        ({"burst_decay": 0}, "burst_decay", "a fraction in (0, 1]"),
        ({"burst_decay": 1.5}, "burst_decay", "a fraction in (0, 1]"),
        ({"max_size": 4, "tenant_limit": 5}, "tenant_limit", "an int in [1, max_size=4]"),
        ({"max_size": 4, "tenants": {"a": 9}}, "tenants['a'].limit", "[1, max_size=4]"),
        ({"tenants": {"a": "x"}}, "tenants['a']", "an int limit or a TenantQuota"),
        ({"tenants": {"other": 1}}, "tenants", "not 'other'"),
        ({"tenant_policy": "drop"}, "tenant_policy", "'wait' or 'refuse'"),
        ({"tenant_cap": 0}, "tenant_cap", "an int >= 1"),
        ({"priorities": 0}, "priorities", "an int in [1, 16]"),
        ({"priorities": 17}, "priorities", "an int in [1, 16]"),
        ({"aging": 0}, "aging", "finite seconds > 0"),
        ({"wait_budget": 0}, "wait_budget", "> 0 or None"),
        ({"shed_smoothing": 0}, "shed_smoothing", "(0, 1]"),
    ],
)
def test_bad_value_names_parameter_and_range(
    options: dict[str, Any], parameter: str, accepted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(**options)
    assert info.value.parameter == parameter
    assert parameter in str(info.value)
    assert accepted in str(info.value)


def test_pool_keywords_are_validated_too(registry: PoolRegistry) -> None:
    with pytest.raises(ConfigError, match="max_size"):
        Pool(factory(object), max_size=-3, maintain=False)


def test_unknown_keyword_is_a_type_error(registry: PoolRegistry) -> None:
    with pytest.raises(TypeError, match="max_sise"):
        Pool(factory(object), max_sise=3)


def test_keywords_override_a_config(registry: PoolRegistry) -> None:
    pool = Pool(factory(object), PoolConfig(max_size=3), min_size=1, maintain=False)
    assert (pool.config.max_size, pool.config.min_size) == (3, 1)
    assert registry.snapshot()[0].max == 3


def test_tenant_reserves_are_checked_against_limit_and_max(registry: PoolRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        PoolConfig(max_size=4, tenants={"a": TenantQuota(limit=2, reserve=3)})
    assert info.value.parameter == "tenants['a'].reserve"
    assert "an int in [0, 2]" in str(info.value)
    with pytest.raises(ConfigError) as info:
        PoolConfig(max_size=4, tenants={"a": TenantQuota(reserve=3), "b": TenantQuota(reserve=2)})
    assert "at most max_size=4" in str(info.value)


def test_features_are_off_by_default() -> None:
    cfg = PoolConfig()
    assert cfg.burst_max is None and cfg.ceiling == cfg.max_size
    assert not cfg.tenants_on
    assert cfg.priorities == 1
    assert cfg.wait_budget is None
