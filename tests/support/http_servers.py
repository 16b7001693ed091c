"""Loopback HTTP and HTTPS servers for tests and benchmarks (HTTPS certificates from a trustme CA).

Routes (GET):

* ``/ok`` (and anything unknown): 200, a small body, keep-alive;
* ``/close``: 200 with ``Connection: close`` (the server ends the keep-alive connection);
* ``/redirect/N``: a chain of N 302s ending at ``/ok``;
* ``/flaky/KEY/N``: 503 with ``Retry-After: 0`` for the first N requests carrying KEY, then 200;
* ``/gate/NAME``: blocks until the test calls :meth:`LoopbackServer.open_gate` (holds a
  connection busy without sleeping);
* ``/big``: a 256 KiB body (a streamed response stays unread).

Requests whose target is an absolute URI (``GET http://host/path``) are answered as if the server
were a forwarding proxy, and ``CONNECT host:port`` opens a real tunnel: the same server is then a
proxy for the tests' ProxyManager cases. The server records each request's path and the headers
the proxy cases care about, and :meth:`LoopbackServer.drop_connections` closes every client socket
it holds (the "server closed an idle keep-alive connection" case).

The handler sets ``disable_nagle_algorithm``: without it every keep-alive response stalls ~40 ms
on delayed ACKs.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["LoopbackCA", "LoopbackServer", "RecordedRequest", "serve"]

_BIG = b"x" * (256 * 1024)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Shared:
    """State shared by the handler threads of one server."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[RecordedRequest] = field(default_factory=list)
    sockets: set[socket.socket] = field(default_factory=set)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    at_gate: dict[str, int] = field(default_factory=dict)
    flaky: dict[str, int] = field(default_factory=dict)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def gate(self, name: str) -> threading.Event:
        with self.lock:
            return self.gates.setdefault(name, threading.Event())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    shared: _Shared  # set on the per-server subclass

    def setup(self) -> None:
        super().setup()
        with self.shared.lock:
            self.shared.sockets.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.shared.lock:
            self.shared.sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _record(self) -> str:
        path = self.path
        if "://" in path:  # forwarding proxy form: answer for the origin
            path = urlsplit(path).path or "/"
        with self.shared.lock:
            self.shared.requests.append(
                RecordedRequest(self.command, self.path, {k: v for k, v in self.headers.items()})
            )
        return path

    def _send(self, status: int, body: bytes, *, close: bool = False, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self._record()
        parts = path.strip("/").split("/")
        if parts[0] == "close":
            self._send(200, b"closing", close=True)
        elif parts[0] == "redirect" and len(parts) == 2:
            left = int(parts[1])
            target = "/ok" if left <= 1 else f"/redirect/{left - 1}"
            self._send(302, b"", Location=target)
        elif parts[0] == "flaky" and len(parts) == 3:
            with self.shared.lock:
                seen = self.shared.flaky.get(parts[1], 0)
                self.shared.flaky[parts[1]] = seen + 1
            if seen < int(parts[2]):
                self._send(503, b"try again", Retry_After="0")
            else:
                self._send(200, b"recovered")
        elif parts[0] == "gate" and len(parts) == 2:
            gate = self.shared.gate(parts[1])
            with self.shared.arrived:
                self.shared.at_gate[parts[1]] = self.shared.at_gate.get(parts[1], 0) + 1
                self.shared.arrived.notify_all()
            gate.wait(30)
            self._send(200, b"through the gate")
        elif parts[0] == "big":
            self._send(200, _BIG)
        else:
            self._send(200, b"ok")

    def do_CONNECT(self) -> None:
        self._record()
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        except OSError:
            self._send(502, b"", close=True)
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.close_connection = True
        _pipe(self.connection, upstream)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes (the CONNECT tunnel)."""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], 30)
            if not ready:
                return
            for src in ready:
                data = src.recv(65536)
                if not data:
                    return
                (b if src is a else a).sendall(data)
    except OSError:
        return
    finally:
        b.close()


class LoopbackCA:
    """A trustme CA and a server certificate for 127.0.0.1 and localhost."""

    def __init__(self) -> None:
        import trustme

        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost")
        self._dir = tempfile.TemporaryDirectory(prefix="poolmon-ca-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(ctx)
        return ctx

    def server_files(self) -> tuple[str, str]:
        """(certificate chain, private key) as PEM files, for servers that take paths."""
        cert = str(Path(self._dir.name) / "server.pem")
        key = str(Path(self._dir.name) / "server.key")
        if not Path(cert).exists():
            for i, blob in enumerate(self._cert.cert_chain_pems):
                with open(cert, "ab" if i else "wb") as f:
                    f.write(blob.bytes())
            self._cert.private_key_pem.write_to_path(key)
        return cert, key

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self._ca.configure_trust(ctx)
        return ctx

    def cleanup(self) -> None:
        self._dir.cleanup()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handler threads block in readline; never join them
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, addr


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 and a free port; HTTPS when given a TLS context."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._shared = _Shared()
        handler = type("Handler", (_Handler,), {"shared": self._shared})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self.host = "127.0.0.1"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"loopback-{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._shared.lock:
            return list(self._shared.requests)

    def open_gate(self, name: str) -> None:
        self._shared.gate(name).set()

    def wait_at_gate(self, name: str, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` requests are held at gate ``name`` (real state, with a
        deadline)."""
        with self._shared.arrived:
            ok = self._shared.arrived.wait_for(
                lambda: self._shared.at_gate.get(name, 0) >= count, timeout
            )
        if not ok:
            raise TimeoutError(f"{count} requests did not reach gate {name!r} in {timeout}s")

    def drop_connections(self) -> int:
        """Close every client connection the server holds; returns how many."""
        with self._shared.lock:
            sockets = list(self._shared.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(sockets)

    def close(self) -> None:
        for gate in list(self._shared.gates):
            self.open_gate(gate)
        self._server.shutdown()
        self.drop_connections()
        self._server.server_close()


@contextlib.contextmanager
def serve(tls: ssl.SSLContext | None = None) -> Iterator[LoopbackServer]:
    server = LoopbackServer(tls)
    try:
        yield server
    finally:
        server.close()
