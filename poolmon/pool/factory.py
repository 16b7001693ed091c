"""Factories: how a pool opens, checks, resets and closes the resources it lends.

A pool knows nothing about what it pools. Everything resource-specific lives in a factory:

* ``create()`` opens one resource (raise on failure: the pool backs off and retries);
* ``validate(conn)`` is a health check: return False *or raise* and the connection is evicted
  with reason ``failed_validation``;
* ``reset(conn)`` runs on return (rollback, discard session state): raise and the connection is
  evicted with reason ``reset_failed``;
* ``is_broken(conn)`` is a cheap, I/O-free look at the resource on return (a closed socket, a
  driver's ``broken`` flag): True evicts it with reason ``broken``;
* ``destroy(conn)`` closes it; errors are swallowed (counted), the resource is gone either way.

:class:`BaseFactory` / :class:`BaseAsyncFactory` give harmless defaults for all but ``create``;
:func:`factory` builds one from plain callables.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from poolmon.errors import ConfigError

__all__ = [
    "AsyncFactory",
    "BaseAsyncFactory",
    "BaseFactory",
    "Factory",
    "check_factory",
    "factory",
]

T = TypeVar("T")


class Factory(Protocol[T]):
    """What :class:`~poolmon.pool.Pool` needs to manage resources of type ``T``."""

    def create(self) -> T: ...

    def validate(self, conn: T) -> bool: ...

    def reset(self, conn: T) -> None: ...

    def is_broken(self, conn: T) -> bool: ...

    def destroy(self, conn: T) -> None: ...


class AsyncFactory(Protocol[T]):
    """What :class:`~poolmon.pool.AsyncPool` needs; ``is_broken`` stays synchronous (no I/O)."""

    async def create(self) -> T: ...

    async def validate(self, conn: T) -> bool: ...

    async def reset(self, conn: T) -> None: ...

    def is_broken(self, conn: T) -> bool: ...

    async def destroy(self, conn: T) -> None: ...


class BaseFactory(Generic[T]):
    """Defaults: always valid, nothing to reset, never broken, ``destroy`` calls ``close()``."""

    def create(self) -> T:
        raise NotImplementedError

    def validate(self, conn: T) -> bool:
        return True

    def reset(self, conn: T) -> None:
        return None

    def is_broken(self, conn: T) -> bool:
        return False

    def destroy(self, conn: T) -> None:
        close = getattr(conn, "close", None)
        if close is not None:
            close()


class BaseAsyncFactory(Generic[T]):
    """Async defaults; ``destroy`` awaits ``close()`` (or calls it when it is synchronous)."""

    async def create(self) -> T:
        raise NotImplementedError

    async def validate(self, conn: T) -> bool:
        return True

    async def reset(self, conn: T) -> None:
        return None

    def is_broken(self, conn: T) -> bool:
        return False

    async def destroy(self, conn: T) -> None:
        close = getattr(conn, "close", None)
        if close is not None:
            result = close()
            if isinstance(result, Awaitable):
                await result


def hook(factory: object, name: str) -> Callable[..., Any] | None:
    """``factory.name`` bound, or None when it is a known no-op (the pool skips the call).

    Known no-ops: the defaults of :class:`BaseFactory` and :class:`BaseAsyncFactory` (a factory
    that does not override them), and the names a factory lists in ``no_ops``. Works for sync
    and async factories alike; the caller awaits an async hook itself.
    """
    method = getattr(factory, name, None)
    if method is None or name in getattr(factory, "no_ops", ()):
        return None
    func = getattr(method, "__func__", None)
    if func is not None and func in (getattr(BaseFactory, name), getattr(BaseAsyncFactory, name)):
        return None
    return method  # type: ignore[no-any-return]


class _CallableFactory(BaseFactory[T]):
    def __init__(
        self,
        create: Callable[[], T],
        validate: Callable[[T], Any] | None,
        reset: Callable[[T], Any] | None,
        is_broken: Callable[[T], bool] | None,
        destroy: Callable[[T], Any] | None,
    ) -> None:
        self._create = create
        self._validate = validate
        self._reset = reset
        self._is_broken = is_broken
        self._destroy = destroy
        #: Hooks that do nothing here (see :func:`hook`).
        self.no_ops = frozenset(
            n
            for n, f in (("reset", reset), ("is_broken", is_broken), ("validate", validate))
            if f is None
        )

    def create(self) -> T:
        return self._create()

    def validate(self, conn: T) -> bool:
        # A validator that returns None (e.g. ``lambda c: c.execute("SELECT 1")``) passes when
        # it does not raise; only an explicit False fails.
        return self._validate is None or self._validate(conn) is not False

    def reset(self, conn: T) -> None:
        if self._reset is not None:
            self._reset(conn)

    def is_broken(self, conn: T) -> bool:
        return self._is_broken is not None and bool(self._is_broken(conn))

    def destroy(self, conn: T) -> None:
        if self._destroy is not None:
            self._destroy(conn)
        else:
            super().destroy(conn)


def factory(
    create: Callable[[], T],
    *,
    validate: Callable[[T], Any] | None = None,
    reset: Callable[[T], Any] | None = None,
    is_broken: Callable[[T], bool] | None = None,
    destroy: Callable[[T], Any] | None = None,
) -> Factory[T]:
    """A sync factory from callables (``destroy`` defaults to calling ``conn.close()``)."""
    return _CallableFactory(create, validate, reset, is_broken, destroy)


_SYNC_FORMS = (
    "an object whose create() returns a resource (plain def): a BaseFactory subclass, "
    "poolmon.factory(create, validate=..., reset=..., is_broken=..., destroy=...), or any "
    "object with create() and optionally validate/reset/is_broken/destroy"
)
_ASYNC_FORMS = (
    "an object whose create() is a coroutine function (async def): a BaseAsyncFactory "
    "subclass, or any object with async create() and optionally async validate/reset/destroy "
    "and a plain (no I/O) is_broken"
)
#: The hooks AsyncPool awaits (``is_broken`` stays synchronous in both pools).
_AWAITED = ("create", "validate", "reset", "destroy")


def check_factory(factory: object, *, asynchronous: bool) -> None:
    """Refuse at construction a factory the pool cannot drive (``ConfigError``).

    Refused: a class instead of an instance; a missing, non-callable or not overridden
    ``create``; for Pool, a hook that is a coroutine function (it would never run); for
    AsyncPool, an awaited hook (``create``, ``validate``, ``reset``, ``destroy``) that is a
    plain ``def`` (awaiting its result fails), or an ``async def`` ``is_broken``. Hooks left
    as the base classes' no-op defaults are never called, so they are not checked.
    """
    forms = _ASYNC_FORMS if asynchronous else _SYNC_FORMS
    kind = "AsyncPool" if asynchronous else "Pool"

    def refuse(why: str) -> ConfigError:
        return ConfigError("factory", factory, f"{forms} ({kind}: {why})")

    if isinstance(factory, type):
        raise refuse(f"got the class {factory.__name__}, pass an instance")
    create = getattr(factory, "create", None)
    if create is None:
        raise refuse("the create() method is missing")
    if not callable(create):
        raise refuse("create is not callable")
    if hook(factory, "create") is None:
        raise refuse("create() is not implemented (the base class default)")
    for name in ("create", "validate", "reset", "is_broken", "destroy"):
        method = (
            getattr(factory, name, None) if name in ("create", "destroy") else hook(factory, name)
        )
        if method is None:
            continue
        if not callable(method):
            raise refuse(f"{name} is not callable")
        is_async = inspect.iscoroutinefunction(method)
        if asynchronous and name in _AWAITED:
            plain = inspect.isfunction(method) or inspect.ismethod(method)
            if plain and not is_async:
                raise refuse(f"{name}() is a plain def; use Pool for a sync factory")
        elif is_async:
            raise refuse(
                f"{name}() is async def; "
                + ("is_broken must not do I/O" if asynchronous else "use AsyncPool")
            )
