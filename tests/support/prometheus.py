"""A real Prometheus server for tests: started on a free loopback port with a temporary config.

with PrometheusServer(binary, scrape_targets=["127.0.0.1:9464"]) as prom:
    prom.wait_for_scrape()
    prom.query("sum(pool_connection_usage)")
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["PrometheusServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """Runs ``prometheus`` scraping ``scrape_targets`` every ``interval`` (seconds).

    ``rule_files`` are copied into the config; ``evaluation_interval`` follows ``interval``.
    """

    def __init__(
        self,
        binary: str,
        scrape_targets: Sequence[str],
        *,
        interval: float = 1.0,
        rule_files: Sequence[str | Path] = (),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="poolmon-prom-"))
        rules = [str(Path(r).resolve()) for r in rule_files]
        # Prometheus durations take no decimals ("1.0s" is rejected): whole milliseconds.
        every = f"{max(1, round(interval * 1000))}ms"
        self.targets = list(scrape_targets)
        config = {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": rules,
            "scrape_configs": [
                {
                    "job_name": "poolmon",
                    "scrape_interval": every,
                    "static_configs": [{"targets": list(scrape_targets)}],
                }
            ],
        }
        # JSON is valid YAML, so no YAML library is needed.
        (self._dir / "prometheus.yml").write_text(json.dumps(config))
        self._extra = list(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        self._proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                *self._extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self._dir / "prometheus.log", "wb"),
        )
        self._wait_ready()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def log(self) -> str:
        path = self._dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)  # polling a process we started; not a synchronisation stand-in
        raise TimeoutError(f"prometheus not ready after {timeout}s:\n{self.log}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result`` (raises on an API error)."""
        body = self._get("/api/v1/query", {"query": promql})
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def wait_until(self, promql: str, predicate: Any = bool, timeout: float = 60.0) -> Any:
        """Poll ``promql`` until ``predicate(result)`` is true; return the result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if predicate(result):
                return result
            time.sleep(0.25)
        raise TimeoutError(f"{promql!r} never satisfied the condition; last result {result}")

    def wait_for_scrape(self, timeout: float = 60.0) -> None:
        """Block until every target has been scraped successfully at least once."""
        expected = len(self.targets)
        self.wait_until(
            'up{job="poolmon"}',
            lambda r: len(r) == expected and all(s["value"][1] == "1" for s in r),
            timeout,
        )

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["data"]["alerts"])

    def label_values(self, name: str = "__name__") -> list[str]:
        return list(self._get(f"/api/v1/label/{name}/values")["data"])
