"""poolmon's own health counters: failures it absorbed so the host application never saw them."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

__all__ = ["SelfMetrics", "log_once"]

_logged_lock = threading.Lock()
_logged: set[tuple[str, str]] = set()


def log_once(logger: logging.Logger, key: str, message: str, *args: object) -> bool:
    """Log ``message`` at WARNING the first time ``key`` is seen for ``logger``; True if logged.

    Observation must never flood the host's logs: a failing sink or exporter is reported once and
    then only counted (see :class:`SelfMetrics`).
    """
    ident = (logger.name, key)
    with _logged_lock:
        if ident in _logged:
            return False
        _logged.add(ident)
    logger.warning(message, *args)
    return True


class SelfMetrics:
    """Counters of absorbed failures, keyed by metric name and one label value.

    Off the hot path: only touched when something already went wrong.
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, int]] = {
            "poolmon.export.errors": {},
            "poolmon.subscriber.errors": {},
            "poolmon.shim.errors": {},
        }

    def inc(self, metric: str, label: str) -> None:
        with self._lock:
            per_label = self._counts.setdefault(metric, {})
            per_label[label] = per_label.get(label, 0) + 1

    def snapshot(self) -> Mapping[str, Mapping[str, int]]:
        with self._lock:
            return {metric: dict(values) for metric, values in self._counts.items()}

    def reset(self) -> None:
        with self._lock:
            for values in self._counts.values():
                values.clear()
