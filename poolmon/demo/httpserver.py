"""The demo's HTTP backend: a loopback server that can go down and come back on the same port.

Keep-alive (HTTP/1.1) with Nagle's algorithm off on the handler: without it every keep-alive
response on loopback stalls ~40 ms (DESIGN.md section 2). ``GET /?ms=N`` answers after N ms.

:meth:`DemoHttpServer.down` closes the listening socket *and* every open keep-alive connection,
so clients see refused connects (create errors) and dropped connections (broken evictions), as
in a real outage; :meth:`up` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["DemoHttpServer"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        try:
            delay = min(float(query.get("ms", ["0"])[0]), 5000.0) / 1000.0
        except ValueError:
            delay = 0.0
        if delay > 0:
            time.sleep(delay)  # the simulated backend's work
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's screen is poolmon top, not an access log


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-response are part of the demo's outage, not news

    def track(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.discard(conn)

    def drop_all(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class DemoHttpServer:
    """Start with :meth:`up`; ``url`` stays the same across down/up."""

    def __init__(self, addr: str = "127.0.0.1", port: int = 0) -> None:
        self.addr = addr
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._server is not None

    def up(self) -> bool:
        """Listen (again); False if the port is taken meanwhile (the outage just goes on)."""
        with self._lock:
            if self._server is not None:
                return True
            try:
                server = _Server((self.addr, self.port))
            except OSError:
                return False
            self.port = int(server.server_address[1])
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.1},
                daemon=True,
                name="poolmon-demo-http",
            )
            self._thread.start()
            return True

    def down(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        # shutdown() waits for serve_forever to notice; a thread that never started (start()
        # interrupted) never would, and the wait would be forever. Not alive: just close.
        if thread is not None and thread.is_alive():
            server.shutdown()
        server.server_close()
        server.drop_all()
        if thread is not None:
            thread.join(timeout=5)
