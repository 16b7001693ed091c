"""How ``poolmon demo`` stops: SIGINT and SIGTERM end it cleanly and promptly, whenever they come.

Three things went wrong before this module:

* A process started in the background by a non-interactive shell (a CI script, ``cmd &``)
  inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler: ``kill -INT``
  (a test's ``send_signal(SIGINT)``) did nothing, and the demo ran on until a SIGTERM.
  :class:`StopSignals` installs both handlers explicitly, whatever the process inherited.
* A signal landing in the middle of setup left half-built state behind (a worker thread recorded
  but never started, so ``stop()`` failed on its join). :func:`held` keeps the signals pending
  while setup runs; they are raised the moment it ends, where the caller's clean-up is ready.
* A signal is delivered to whichever thread does not block it; when a worker got it, the main
  thread only noticed at its next wake-up. Threads started inside :func:`held` inherit the
  blocked mask, so the kernel hands these signals to the main thread, whose wait they interrupt
  at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Final

__all__ = ["STOP_SIGNALS", "StopSignals", "held"]

#: The signals that end the demo: Ctrl-C and a plain ``kill``.
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class StopSignals:
    """While entered (main thread only; elsewhere it changes nothing): SIGINT raises
    KeyboardInterrupt and SIGTERM raises ``terminated()``. :meth:`ignore` switches both to no-ops
    for the (bounded) clean-up, so a second Ctrl-C cannot cut it short. Exiting restores the
    handlers the process had."""

    def __init__(self, terminated: Callable[[], BaseException]) -> None:
        self._terminated = terminated
        self._previous: dict[int, _Handler] = {}

    def _raise_terminated(self, signum: int, frame: FrameType | None) -> None:
        raise self._terminated()

    def __enter__(self) -> StopSignals:
        if _main_thread():
            self._install(
                {
                    signal.SIGINT: signal.default_int_handler,
                    signal.SIGTERM: self._raise_terminated,
                }
            )
        return self

    def ignore(self) -> None:
        """From now on the stop signals do nothing (the stop is already under way)."""
        if _main_thread() and self._previous:
            self._install({signum: _ignored for signum in STOP_SIGNALS})

    def _install(self, handlers: dict[int, _Handler]) -> None:
        for signum, handler in handlers.items():
            previous = signal.signal(signum, handler)
            self._previous.setdefault(signum, previous)

    def __exit__(self, *exc: object) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            # None: set from outside Python; SIG_DFL is the closest restorable disposition.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _ignored(signum: int, frame: FrameType | None) -> None:
    """A Python-level no-op rather than SIG_IGN: SIG_IGN would be inherited by anything the
    process starts later, and the dispositions are restored on exit anyway."""


@contextmanager
def held() -> Iterator[None]:
    """Block the stop signals in the calling thread while the body runs.

    A signal that arrives meanwhile stays pending; unblocking delivers it, and its handler raises
    right here at the block's end (``pthread_sigmask`` checks for pending handlers before it
    returns). Threads started inside inherit the blocked mask and keep it for life: that is
    intended (module docstring). Where ``pthread_sigmask`` does not exist (Windows) it does
    nothing.
    """
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    previous = mask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)
