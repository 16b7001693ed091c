"""gunicorn config: several workers, every worker's pools merged on one /metrics endpoint.

How it works (see poolmon/exporters/multiprocess.py):
* ``post_fork``: each worker starts a SnapshotWriter writing its pools to POOLMON_MULTIPROC_DIR
  every POOLMON_MULTIPROC_INTERVAL seconds (threads do not survive fork, so it starts here);
* ``when_ready``: the master serves /metrics on POOLMON_PROMETHEUS_PORT, merging all files;
* ``child_exit``: a dead worker's counters are kept (totals never go back), its gauges dropped.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from poolmon.prometheus import SnapshotWriter, mark_process_dead, serve

bind = os.environ.get("APP_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "3"))
preload_app = False  # each worker builds its own pools after the fork

multiproc_dir = os.environ.setdefault(
    "POOLMON_MULTIPROC_DIR", tempfile.mkdtemp(prefix="poolmon-multiproc-")
)
_interval = float(os.environ.get("POOLMON_MULTIPROC_INTERVAL", "1.0"))
_metrics_port = int(os.environ.get("POOLMON_PROMETHEUS_PORT", "9464"))
_metrics_addr = os.environ.get("POOLMON_PROMETHEUS_ADDR", "127.0.0.1")
_writers: dict[int, SnapshotWriter] = {}


def on_starting(server: Any) -> None:
    # Files of a previous run would add its totals to this one's.
    for stale in Path(multiproc_dir).glob("poolmon-*.json"):
        stale.unlink()


def when_ready(server: Any) -> None:
    server.poolmon_metrics = serve(_metrics_port, _metrics_addr, multiprocess_dir=multiproc_dir)
    server.log.info("poolmon /metrics on %s", server.poolmon_metrics.url)


def post_fork(server: Any, worker: Any) -> None:
    _writers[os.getpid()] = SnapshotWriter(multiproc_dir, interval=_interval).start()


def worker_exit(server: Any, worker: Any) -> None:
    writer = _writers.pop(os.getpid(), None)
    if writer is not None:
        writer.close()  # a final snapshot with everything this worker counted


def child_exit(server: Any, worker: Any) -> None:
    mark_process_dead(worker.pid, multiproc_dir)


def on_exit(server: Any) -> None:
    metrics = getattr(server, "poolmon_metrics", None)
    if metrics is not None:
        metrics.close()
