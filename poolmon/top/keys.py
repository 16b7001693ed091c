"""Raw key input for the live view: cbreak mode on a terminal, restored on every exit.

:class:`KeyReader` switches the terminal to cbreak mode (no echo, no line buffering) while keeping
signal keys working, so Ctrl-C still raises ``KeyboardInterrupt`` and unwinds through
``__exit__``, which puts back the exact saved ``termios`` attributes. Off a terminal (stdin is a
pipe or /dev/null) it reads no keys and only waits.
"""

from __future__ import annotations

import os
import select
import sys
from types import TracebackType
from typing import IO, Any, Final

from poolmon.top.state import BACKSPACE, DOWN, ENTER, ESCAPE, UP

__all__ = ["KeyReader", "decode_keys"]

_SEQUENCES: Final = {
    "\x1b[A": UP,
    "\x1b[B": DOWN,
    "\x1bOA": UP,
    "\x1bOB": DOWN,
}


def decode_keys(data: str) -> list[str]:
    """Split raw terminal input into keys: characters or the named keys of :mod:`state`."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        ch = data[i]
        if ch == "\x1b":
            seq = data[i : i + 3]
            if seq in _SEQUENCES:
                keys.append(_SEQUENCES[seq])
                i += 3
                continue
            if len(data) > i + 1 and data[i + 1] in "[O":
                # Another escape sequence (F-keys, Home...): skip to its final byte.
                j = i + 2
                while j < len(data) and not ("@" <= data[j] <= "~"):
                    j += 1
                i = j + 1
                continue
            keys.append(ESCAPE)
        elif ch in "\r\n":
            keys.append(ENTER)
        elif ch in "\x7f\x08":
            keys.append(BACKSPACE)
        elif ch.isprintable():
            keys.append(ch)
        i += 1
    return keys


class KeyReader:
    """Context manager owning the terminal mode of ``stream`` (default: stdin)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        try:
            self._fd: int | None = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self.enabled = self._fd is not None and os.isatty(self._fd)
        self._saved: list[Any] | None = None

    def __enter__(self) -> KeyReader:
        if self.enabled and self._fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the terminal back as it was (idempotent)."""
        if self._saved is not None and self._fd is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def wait(self, timeout: float | None, wake_fd: int | None = None) -> tuple[list[str], bool]:
        """Wait up to ``timeout`` s for keys or for ``wake_fd`` to be readable.

        Returns the keys read and whether ``wake_fd`` woke the wait (its bytes are drained).
        """
        fds = [fd for fd in (self._fd if self.enabled else None, wake_fd) if fd is not None]
        if not fds:
            if timeout:
                select.select([], [], [], timeout)
            return [], False
        ready, _, _ = select.select(fds, [], [], timeout)
        keys: list[str] = []
        woke = False
        for fd in ready:
            data = os.read(fd, 1024)
            if fd == wake_fd:
                woke = True
            elif not data:
                self.enabled = False  # the terminal hung up: stop selecting on it
            else:
                keys.extend(decode_keys(data.decode("utf-8", "replace")))
        return keys, woke
