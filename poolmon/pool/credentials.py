"""Credential providers: credentials fetched at connect time, never kept.

Rotated secrets (short-lived cloud IAM tokens, a secrets manager's current password) must
apply to new connections without a restart. A *provider* is a callable that returns the
credentials for one connect, as the keyword arguments the driver takes (``{"user": ...,
"password": ...}``); a sync pool's provider is a plain callable, an async pool's may also be a
coroutine function. :func:`credentialed` / :func:`async_credentialed` build a factory whose
``create`` asks the provider, connects with what it got and forgets it.

Where the credentials live: in two local variables of one ``create`` call, nowhere else. The
factory holds the provider, not its result; the pool, its config, its repr, its events and its
errors never see them. A provider that fails is a failed create (the pool backs off and retries,
as for an unreachable server). A connect error whose message quotes a secret value is replaced
by :class:`CredentialedConnectError` with every secret value masked (``***``) and without the
original as its cause or context (a traceback would print it).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from poolmon.core.redact import scrub
from poolmon.errors import PoolmonError
from poolmon.pool.factory import BaseAsyncFactory, BaseFactory

__all__ = [
    "SECRET_KEYS",
    "CredentialedConnectError",
    "async_credentialed",
    "credentialed",
]

T = TypeVar("T")

#: Keys whose values are secrets (masked in any error message about the connect).
SECRET_KEYS = frozenset({"password", "passwd", "token", "secret", "api_key", "auth", "pwd"})

Credentials = Mapping[str, Any]


class CredentialedConnectError(PoolmonError):
    """A connect with provided credentials failed; the message has every secret masked."""


def _mask(exc: BaseException, creds: Credentials) -> str:
    text = f"{type(exc).__name__}: {exc}"
    for key, value in creds.items():
        if key.lower() in SECRET_KEYS and isinstance(value, str) and value:
            text = text.replace(value, "***")
    return scrub(text)


def _checked(creds: object) -> Credentials:
    if not isinstance(creds, Mapping):
        raise CredentialedConnectError(
            f"the credential provider returned {type(creds).__name__}, expected a mapping "
            "of connect keyword arguments"
        )
    return creds


class _Provided:
    """What both credentialed factories hold: the connect callable, the provider (never its
    result) and the optional hooks; hooks not given are no-ops the pool skips."""

    _label = "credentialed"

    def __init__(
        self,
        connect: Callable[..., Any],
        provider: Callable[[], Any],
        hooks: Mapping[str, Callable[..., Any] | None],
    ) -> None:
        self._connect = connect
        self._provider = provider
        self._hooks = hooks
        self.no_ops = frozenset(n for n in ("validate", "reset", "is_broken") if not hooks.get(n))

    def __repr__(self) -> str:  # the provider is shown by name, never called here
        return f"{self._label}({_name(self._connect)}, provider={_name(self._provider)})"


class _CredentialedFactory(_Provided, BaseFactory[T]):
    def create(self) -> T:
        creds = _checked(self._provider())  # a provider error is a create failure
        message = None
        try:
            conn: T = self._connect(**creds)
            return conn
        except Exception as exc:
            message = _mask(exc, creds)
        finally:
            del creds  # not kept, not even in this frame after the call
        raise CredentialedConnectError(message)  # outside the except: no __context__

    def validate(self, conn: T) -> bool:
        hook = self._hooks.get("validate")
        return hook is None or hook(conn) is not False

    def reset(self, conn: T) -> None:
        hook = self._hooks.get("reset")
        if hook is not None:
            hook(conn)

    def is_broken(self, conn: T) -> bool:
        hook = self._hooks.get("is_broken")
        return hook is not None and bool(hook(conn))

    def destroy(self, conn: T) -> None:
        hook = self._hooks.get("destroy")
        if hook is not None:
            hook(conn)
        else:
            super().destroy(conn)


class _AsyncCredentialedFactory(_Provided, BaseAsyncFactory[T], Generic[T]):
    _label = "async_credentialed"

    async def create(self) -> T:
        got = self._provider()
        if inspect.isawaitable(got):
            got = await got
        creds = _checked(got)
        del got
        message = None
        try:
            conn: T = await self._connect(**creds)
            return conn
        except Exception as exc:
            message = _mask(exc, creds)
        finally:
            del creds
        raise CredentialedConnectError(message)

    async def validate(self, conn: T) -> bool:
        hook = self._hooks.get("validate")
        if hook is None:
            return True
        result = hook(conn)
        if inspect.isawaitable(result):
            result = await result
        return result is not False

    async def reset(self, conn: T) -> None:
        hook = self._hooks.get("reset")
        if hook is not None:
            result = hook(conn)
            if inspect.isawaitable(result):
                await result

    def is_broken(self, conn: T) -> bool:
        hook = self._hooks.get("is_broken")
        return hook is not None and bool(hook(conn))

    async def destroy(self, conn: T) -> None:
        hook = self._hooks.get("destroy")
        if hook is None:
            await super().destroy(conn)
            return
        result = hook(conn)
        if inspect.isawaitable(result):
            await result


def _name(func: object) -> str:
    return getattr(func, "__qualname__", type(func).__qualname__)


def credentialed(
    connect: Callable[..., T],
    provider: Callable[[], Credentials],
    *,
    validate: Callable[[T], Any] | None = None,
    reset: Callable[[T], Any] | None = None,
    is_broken: Callable[[T], bool] | None = None,
    destroy: Callable[[T], Any] | None = None,
) -> BaseFactory[T]:
    """A :class:`~poolmon.pool.Pool` factory: ``connect(**provider())`` per new connection.

    >>> f = credentialed(lambda user, password: (user, len(password)),
    ...                  lambda: {"user": "app", "password": "fresh-token"})
    >>> f.create()
    ('app', 11)
    """
    hooks = {"validate": validate, "reset": reset, "is_broken": is_broken, "destroy": destroy}
    return _CredentialedFactory(connect, provider, hooks)


def async_credentialed(
    connect: Callable[..., Awaitable[T]],
    provider: Callable[[], Credentials | Awaitable[Credentials]],
    *,
    validate: Callable[[T], Any] | None = None,
    reset: Callable[[T], Any] | None = None,
    is_broken: Callable[[T], bool] | None = None,
    destroy: Callable[[T], Any] | None = None,
) -> BaseAsyncFactory[T]:
    """An :class:`~poolmon.pool.AsyncPool` factory: ``await connect(**(await provider()))``
    per new connection (the provider may be sync or async)."""
    hooks = {"validate": validate, "reset": reset, "is_broken": is_broken, "destroy": destroy}
    return _AsyncCredentialedFactory(connect, provider, hooks)
