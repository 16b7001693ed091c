"""``poolmon top`` in a real terminal (tmux) on a live ``poolmon demo``: keys, screen, and the
terminal restored after ``q``, after SIGINT (Ctrl-C) and after SIGTERM."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require

from .conftest import ROOT, demo, wait_for

pytestmark = pytest.mark.integration


class Tmux:
    """One detached tmux session (a unique name: colleagues run tests in parallel)."""

    def __init__(self, tmp: Path) -> None:
        self.name = f"poolmon-top-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", *args], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def start(self, command: str) -> None:
        # COLUMNS/LINES inherited from the test runner would pin rich to 80 columns.
        command = f"env -u COLUMNS -u LINES {command}"
        self.run("new-session", "-d", "-s", self.name, "-x", "200", "-y", "45", command)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def alternate_on(self) -> bool:
        return self.run("display-message", "-p", "-t", self.name, "#{alternate_on}").strip() == "1"

    def pane_pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", self.name, "#{pane_pid}").strip())

    def expect(self, text: str, timeout: float = 20.0) -> str:
        """Poll the screen until it shows ``text``; returns that screen."""

        def shown() -> str:
            screen = self.screen()
            # Compare with whitespace folded too: if tmux ignores -x (a server started earlier
            # with another default-size), a long header wraps and splits the text over lines.
            folded = " ".join(screen.split())
            return screen if text in screen or " ".join(text.split()) in folded else ""

        try:
            return str(wait_for(shown, timeout, repr(text)))
        except AssertionError as exc:
            size = self.run(
                "display-message", "-p", "-t", self.name, "#{window_width}x#{window_height}"
            )
            raise AssertionError(f"{exc}\n--- screen {size.strip()} ---\n{self.screen()}") from None

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    require(shutil.which("tmux") is not None, "tmux")
    session = Tmux(tmp_path)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="module")
def live_demo() -> Iterator[str]:
    with demo(["--phase-seconds", "1.5"]) as (_, url):
        yield url


def _top_then_stty(tmp: Path, url: str, extra: str = "") -> tuple[str, Path]:
    """A shell line: run top, then record the terminal mode and exit status once it is gone."""
    stty = tmp / "stty.txt"
    top = f"{shlex.quote(sys.executable)} -m poolmon top {shlex.quote(url)} --interval 0.5 {extra}"
    line = (
        f"cd {shlex.quote(str(ROOT))} && {top}; echo status=$? > {stty}; stty -a >> {stty}; "
        "sleep 60"
    )
    return f"bash -c {shlex.quote(line)}", stty


def _restored(stty: Path) -> str:
    text = str(
        wait_for(
            lambda: stty.exists() and "icanon" in stty.read_text() and stty.read_text(), 20, "stty"
        )
    )
    words = text.split()
    assert "icanon" in words and "-icanon" not in words
    assert "echo" in words and "-echo" not in words
    return text


def test_keys_and_quit(tmux: Tmux, live_demo: str) -> None:
    command, stty = _top_then_stty(tmux.tmp, live_demo)
    tmux.start(command)
    screen = tmux.expect("demo.orders (sqlite)")
    assert "poolmon top" in screen and "sort saturation v" in screen and "every 0.5s" in screen
    assert "CONNS used/idle/max" in screen and "WAIT p50/p95/p99" in screen
    assert tmux.alternate_on()

    tmux.keys("s")
    tmux.expect("sort used v")
    tmux.keys("r")
    tmux.expect("sort used ^")
    tmux.keys("/", "r", "e", "p", "o", "r", "t", "s")
    tmux.expect("filter: reports_")
    tmux.keys("Enter")
    screen = tmux.expect("filter 'reports'")
    table = screen.split("POOL", 1)[1]
    assert "demo.reports (sqlite)" in table and "demo.orders" not in table
    tmux.keys("p")
    tmux.expect("PAUSED")
    tmux.keys("p", "+")
    screen = tmux.expect("every 0.25s")
    assert "PAUSED" not in screen
    tmux.keys("Enter")
    screen = tmux.expect("Evictions by reason")
    assert "pool demo.reports (sqlite)" in screen and "Errors by type" in screen
    tmux.keys("Escape")
    tmux.expect("CONNS used/idle/max")
    tmux.keys("?")
    screen = tmux.expect("poolmon top: keys")
    assert "refresh faster / slower" in screen
    tmux.keys("Escape")
    tmux.expect("CONNS used/idle/max")

    tmux.keys("q")
    text = _restored(stty)
    assert "status=0" in text
    assert not tmux.alternate_on()  # left the alternate screen


def test_sigint_restores_the_terminal(tmux: Tmux, live_demo: str) -> None:
    command, stty = _top_then_stty(tmux.tmp, live_demo)
    tmux.start(command)
    tmux.expect("demo.orders (sqlite)")
    tmux.keys("C-c")
    text = _restored(stty)
    assert "status=130" in text
    assert not tmux.alternate_on()


def test_sigterm_restores_the_terminal(tmux: Tmux, live_demo: str) -> None:
    command, stty = _top_then_stty(tmux.tmp, live_demo)
    tmux.start(command)
    tmux.expect("demo.orders (sqlite)")
    shell = tmux.pane_pid()
    pids = subprocess.run(
        ["pgrep", "-P", str(shell), "-f", "poolmon top"], capture_output=True, text=True
    ).stdout.split()
    assert len(pids) == 1, pids
    subprocess.run(["kill", "-TERM", pids[0]], check=True)
    text = _restored(stty)
    assert "status=143" in text
    assert not tmux.alternate_on()


def test_demo_with_its_own_monitor(tmux: Tmux) -> None:
    stty = tmux.tmp / "stty.txt"
    demo_cmd = f"{shlex.quote(sys.executable)} -m poolmon demo --port 0 --phase-seconds 1"
    line = (
        f"cd {shlex.quote(str(ROOT))} && {demo_cmd}; echo status=$? > {stty}; stty -a >> {stty}; "
        "sleep 60"
    )
    tmux.start(f"bash -c {shlex.quote(line)}")
    screen = tmux.expect("demo phase:")
    assert "demo.orders (sqlite)" in tmux.expect("demo.orders (sqlite)")
    tmux.expect("http://127.0.0.1:")  # the urllib3 pool against the in-process server
    assert "poolmon top" in screen
    tmux.keys("C-c")
    text = _restored(stty)
    assert "status=0" in text


def test_worker_pools_say_workers_and_tasks(tmux: Tmux) -> None:
    """A live instrumented ThreadPoolExecutor: the table and the detail use the catalog's words."""
    import concurrent.futures as cf
    import threading

    from poolmon.core.registry import PoolRegistry
    from poolmon.exporters.prometheus import serve
    from poolmon.shims import futures

    registry = PoolRegistry()
    assert futures.instrument(registry=registry)
    gate = threading.Event()
    ex = cf.ThreadPoolExecutor(2, thread_name_prefix="tmuxw")
    try:
        running = threading.Barrier(3)
        for _ in range(2):
            ex.submit(lambda: (running.wait(), gate.wait()))
        for _ in range(3):
            ex.submit(pow, 2, 2)
        running.wait()
        with serve(0, registry=registry) as server:
            command, stty = _top_then_stty(tmux.tmp, server.url)
            tmux.start(command)
            screen = tmux.expect("threads://tmuxw")
            assert "WORKERS used/idle/max" in screen and "CONNS" not in screen
            tmux.keys("Enter")
            screen = tmux.expect("pending tasks")
            assert "longest running task" in screen and "2/0/2" in screen
            tmux.keys("q")
            assert "status=0" in _restored(stty)
    finally:
        gate.set()
        ex.shutdown(wait=True)
        futures.uninstrument()
