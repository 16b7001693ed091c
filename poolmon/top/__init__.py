"""``poolmon top``: a live terminal view of pools from /metrics URLs, Prometheus or a JSONL log.

Layers, each its own module: :mod:`~poolmon.top.sources` (what is read, never raising),
:mod:`~poolmon.top.page` and :mod:`~poolmon.top.exposition` (fast exposition parsing),
:mod:`~poolmon.top.replay` (JSONL into ledgers), :mod:`~poolmon.top.model` (pure data: rows, rates,
quantiles, fleet totals), :mod:`~poolmon.top.state` (keys -> view state),
:mod:`~poolmon.top.view` (pure rich renderables), :mod:`~poolmon.top.app` (the live loop).
"""
