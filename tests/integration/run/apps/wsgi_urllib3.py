"""An unmodified WSGI app: every request fetches BACKEND_URL through a module-level urllib3
PoolManager. Under gunicorn each worker imports it after the fork and so has its own pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import urllib3

BACKEND_URL = os.environ["BACKEND_URL"]
http = urllib3.PoolManager()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    http.request("GET", BACKEND_URL).drain_conn()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
