"""Symmetric, idempotent patching of library classes.

Every shim records the exact original object it replaces and restores that same object on
uninstrument (tests check identity). Wrappers are plain closures with the original's exact
signature where the hot path needs it (a closure costs ~0.1 us per call; ``*args, **kwargs``
forwarding and wrapt cost more).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WRAPPED_MARK", "PatchSet", "is_wrapped"]

#: Attribute set on every wrapper poolmon installs; its value is the wrapped original.
WRAPPED_MARK = "__poolmon_original__"


def is_wrapped(obj: object) -> bool:
    return hasattr(obj, WRAPPED_MARK)


@dataclass
class PatchSet:
    """The patches of one shim. ``apply`` twice changes nothing; ``restore`` puts back exactly
    the objects that were there (``owner.__dict__[name]``, including a missing entry)."""

    library: str
    _saved: list[tuple[type | object, str, bool, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return bool(self._saved)

    def wrap(
        self,
        owner: type | object,
        name: str,
        make_wrapper: Callable[[Any], Callable[..., Any]],
    ) -> None:
        """Replace ``owner.name`` with ``make_wrapper(original)``.

        The original is looked up in ``owner.__dict__`` when it defines the attribute itself, so a
        subclass that inherits the method gets no patch of its own (patch each class that
        *overrides* a method). Already-wrapped attributes are left alone (idempotence).
        """
        with self._lock:
            attrs = vars(owner)
            had_own = name in attrs
            original = attrs[name] if had_own else getattr(owner, name)
            if is_wrapped(original):
                return
            target = (
                original.__func__ if isinstance(original, (staticmethod, classmethod)) else original
            )
            wrapper = make_wrapper(target)
            setattr(wrapper, WRAPPED_MARK, original)
            if isinstance(original, staticmethod):
                installed: Any = staticmethod(wrapper)
            elif isinstance(original, classmethod):
                installed = classmethod(wrapper)
            else:
                installed = wrapper
            if installed is not wrapper:
                with contextlib.suppress(AttributeError):
                    setattr(installed, WRAPPED_MARK, original)
            setattr(owner, name, installed)
            self._saved.append((owner, name, had_own, original))

    def restore(self) -> None:
        """Undo every patch in reverse order, restoring the identical original objects."""
        with self._lock:
            while self._saved:
                owner, name, had_own, original = self._saved.pop()
                if had_own:
                    setattr(owner, name, original)
                else:
                    with contextlib.suppress(AttributeError):
                        delattr(owner, name)
