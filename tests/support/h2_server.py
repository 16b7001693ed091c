"""A real HTTP/2 (and HTTP/1.1) server on loopback for tests and benchmarks: hypercorn serving a
small ASGI app over TLS (ALPN ``h2`` and ``http/1.1``), certificates from a trustme CA.

Routes (GET): ``/ok`` (a small body), ``/big`` (256 KiB, for streamed responses),
``/gate/NAME`` (held until the test calls :meth:`H2Server.open_gate`; :meth:`wait_at_gate` blocks
until N requests are held there, real state with a deadline, no sleeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from tests.support.http_servers import LoopbackCA

__all__ = ["H2Server", "serve_h2"]

_BIG = b"x" * (256 * 1024)


class H2Server:
    """hypercorn on 127.0.0.1 and a free port, in a thread with its own event loop."""

    def __init__(self, ca: LoopbackCA, max_concurrent_streams: int = 100) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        self._ca = ca
        self._loop = asyncio.new_event_loop()
        self._gates: dict[str, asyncio.Event] = {}
        self._held: dict[str, int] = {}
        self._held_cond = threading.Condition()
        self._stop = asyncio.Event()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        sock.close()
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        cert_path, key_path = ca.server_files()
        config.certfile = cert_path
        config.keyfile = key_path
        config.alpn_protocols = ["h2", "http/1.1"]
        config.h2_max_concurrent_streams = max_concurrent_streams
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 60
        self._ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            self._ready.set()
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(main(),), daemon=True, name="h2-server"
        )
        self._thread.start()
        self._ready.wait(10)
        _wait_listening(self.port)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].strip("/").split("/")
        body = b"ok"
        if parts[0] == "big":
            body = _BIG
        elif parts[0] == "gate" and len(parts) == 2:
            gate = self._gate(parts[1])
            with self._held_cond:
                self._held[parts[1]] = self._held.get(parts[1], 0) + 1
                self._held_cond.notify_all()
            await gate.wait()
            body = b"through the gate"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def open_gate(self, name: str) -> None:
        self._loop.call_soon_threadsafe(lambda: self._gate(name).set())

    def wait_at_gate(self, name: str, count: int, timeout: float = 10.0) -> None:
        with self._held_cond:
            ok = self._held_cond.wait_for(lambda: self._held.get(name, 0) >= count, timeout)
        if not ok:
            raise TimeoutError(f"{count} requests did not reach gate {name!r} in {timeout}s")

    def close(self) -> None:
        for name in list(self._gates):
            self.open_gate(name)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        with contextlib.suppress(Exception):
            self._loop.close()


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    """Block until the port accepts connections (real state, with a deadline)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            threading.Event().wait(0.01)


@contextlib.contextmanager
def serve_h2(ca: LoopbackCA, max_concurrent_streams: int = 100) -> Iterator[H2Server]:
    server = H2Server(ca, max_concurrent_streams)
    try:
        yield server
    finally:
        server.close()
