"""Processes for top's integration tests: real /metrics endpoints in other processes."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[3]

#: A process holding pools to one shared backend, serving them on a free port.
FLEET_MEMBER = r"""
import sys
from poolmon.core.identity import identity_from_url
from poolmon.core.registry import PoolRegistry
from poolmon.exporters.prometheus import serve

used = int(sys.argv[1])
registry = PoolRegistry()
ledger = registry.register(
    identity_from_url("postgresql://app:hunter2@db.example:5432/shop"), max_size=10
)
for _ in range(used + 1):
    conn = ledger.create(ledger.now())
for conn in list(ledger.connections()["idle"])[:used]:
    ledger.borrow(conn)
server = serve(0, registry=registry)
print(server.url, flush=True)
sys.stdin.read()
"""


def read_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first stdout line of ``proc`` (fails the test after ``timeout``)."""
    box: list[str] = []
    reader = threading.Thread(
        target=lambda: box.append(proc.stdout.readline() if proc.stdout else ""), daemon=True
    )
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        raise AssertionError(f"process printed nothing in {timeout}s (exit {proc.poll()})")
    return box[0].strip()


@contextmanager
def fleet(*used: int) -> Iterator[list[str]]:
    """One process per entry of ``used``; yields their /metrics URLs."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FLEET_MEMBER, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for n in used
    ]
    try:
        yield [read_line(p) for p in procs]
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextmanager
def demo(
    args: Sequence[str] = (), *, sigint: Literal["default", "ignored"] = "default"
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``poolmon demo --no-tui --port 0`` in the background; yields (process, /metrics URL).

    ``sigint`` is the SIGINT disposition the demo inherits, set explicitly so a test does not
    depend on how pytest itself was started: a non-interactive shell starts background commands
    (and so a CI run's pytest, and its children) with SIGINT *ignored*, which an exec keeps.
    """
    disposition = signal.SIG_IGN if sigint == "ignored" else signal.SIG_DFL
    proc = subprocess.Popen(
        [sys.executable, "-m", "poolmon", "demo", "--no-tui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, disposition),
    )
    try:
        line = read_line(proc)
        url = line.split("serving ", 1)[1].split()[0]
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def read_until(proc: subprocess.Popen[str], text: str, timeout: float = 30.0) -> list[str]:
    """stdout lines of ``proc`` up to and including the first one containing ``text`` (fails the
    test after ``timeout`` or when the output ends first)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in proc.stdout if proc.stdout else ():
            lines.append(line.rstrip("\n"))
            if text in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found.is_set():
        raise AssertionError(f"{text!r} not printed in {timeout}s (exit {proc.poll()}): {lines}")
    return list(lines)


def wait_for(predicate: object, timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``predicate()`` until truthy; returns its value (polling real state, not a sleep
    standing in for synchronisation)."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s; last value {value!r}")
