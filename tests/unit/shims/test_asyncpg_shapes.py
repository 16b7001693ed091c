"""The asyncpg shim relies on the shapes of a few asyncpg functions (read from 0.32.0): a release
that changes them must fail here, not mislead the shim."""

from __future__ import annotations

import inspect
import textwrap

import asyncpg.connection as connection
import asyncpg.pool as apool


def _body(fn: object) -> list[str]:
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()[1:]  # type: ignore[arg-type]
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_set_proxy_only_refuses_a_second_proxy_and_assigns() -> None:
    # poolmon's wrapper does the assignment itself (one frame less per acquire and release).
    assert _body(connection.Connection._set_proxy) == [
        "if self._proxy is not None and proxy is not None:",
        "raise exceptions.InterfaceError(",
        "'internal asyncpg error: connection is already proxied')",
        "self._proxy = proxy",
    ]


def test_proxy_is_set_on_acquire_and_cleared_on_release() -> None:
    # Borrow and return are recorded at _set_proxy(proxy) / _set_proxy(None).
    assert "con._set_proxy(self)" in _body(apool.PoolConnectionProxy.__init__)
    assert "con._set_proxy(None)" in _body(apool.PoolConnectionProxy._detach)
    release = _body(apool.PoolConnectionHolder._release)
    assert release.index("self._proxy._detach()") < release.index(
        "self._pool._queue.put_nowait(self)"
    )


def test_acquire_gets_from_the_queue_first() -> None:
    # With no timeout, _acquire awaits _acquire_impl directly, whose first await is the queue's
    # get(): with a holder queued it completes without suspending (no wait possible).
    body = _body(apool.Pool._acquire)
    assert body[1] == "ch = await self._queue.get()  # type: PoolConnectionHolder"
    assert "return await _acquire_impl()" in body


def test_cleanup_releases_the_holder_only_for_its_own_connection() -> None:
    body = _body(connection.Connection._cleanup)
    assert "if holder is not None and holder._con is self:" in body
    assert "holder._release_on_close()" in body
