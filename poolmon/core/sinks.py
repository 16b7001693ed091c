"""Subscribers that ship with poolmon: a JSONL event log and a callback adapter."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from poolmon.core.events import PoolEvent

__all__ = ["CallbackSink", "JsonlSink"]


class JsonlSink:
    """Append each event as one JSON line (the stream ``poolmon spec validate`` checks).

    Pass a path (opened in append mode, line-buffered) or a text stream. Writes happen under the
    ledger's lock, so lines are in event order; use a local file, not a slow network path.
    """

    def __init__(self, target: str | Path | IO[str], *, flush_every: int = 1) -> None:
        if isinstance(target, (str, Path)):
            self._stream: IO[str] = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            self._owns = True
        else:
            self._stream = target
            self._owns = False
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every!r}")
        self._flush_every = flush_every
        self._pending = 0
        self._lock = threading.Lock()  # several pools' ledgers may write to one sink

    def __call__(self, event: PoolEvent) -> None:
        line = json.dumps(event.to_dict(), separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._pending += 1
            if self._pending >= self._flush_every:
                self._stream.flush()
                self._pending = 0

    def close(self) -> None:
        with self._lock:
            self._stream.flush()
            if self._owns:
                self._stream.close()


class CallbackSink:
    """Adapt a function taking the event's dict form (as written to JSONL)."""

    def __init__(self, callback: Callable[[dict[str, object]], None]) -> None:
        self._callback = callback
        self.__qualname__ = getattr(callback, "__qualname__", "CallbackSink")

    def __call__(self, event: PoolEvent) -> None:
        self._callback(event.to_dict())
