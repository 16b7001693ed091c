"""A few of the fuzz cases as real processes: real non-UTF-8 bytes in argv and the environment,
the interpreter's own stdout/stderr encoding, the exit status the shell sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_NON_UTF8 = b"caf\xe9\xff"


def _env(**extra: bytes) -> dict[bytes, bytes]:
    env = {k: v for k, v in os.environb.items() if not k.startswith(b"POOLMON_")}
    env.update({k.encode(): v for k, v in extra.items()})
    return env


def _poolmon(args: list[bytes], env: dict[bytes, bytes] | None = None) -> tuple[int, str, str]:
    ran = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"poolmon", *args],
        capture_output=True,
        env=env if env is not None else _env(),
        timeout=60,
    )
    return (
        ran.returncode,
        ran.stdout.decode("utf-8", "replace"),
        ran.stderr.decode("utf-8", "replace"),
    )


def _one_error_line(err: str, *words: str) -> None:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert all(word in lines[0] for word in words), err


@pytest.mark.parametrize(
    ("args", "env", "status", "words"),
    [
        ([b"dashboards", b"build", b"--out", b"/proc/x"], {}, 2, ("--output", "expected")),
        ([b"spec", b"validate", b"/nonexistent/" + _NON_UTF8], {}, 2, ("FILE=", "expected")),
        ([b"demo", b"--duration=nan"], {}, 2, ("--duration", "expected seconds > 0")),
        ([b"run", b"--", b"true"], {"POOLMON_EXPORTERS": _NON_UTF8}, 2, ("POOLMON_EXPORTERS",)),
        ([b"run", b"--port=" + _NON_UTF8, b"--", b"true"], {}, 2, ("--port", "invalid int")),
        ([b"top", b"--once", b"--interval=inf", b"127.0.0.1:1"], {}, 2, ("--interval",)),
    ],
)
def test_usage_errors_as_processes(
    args: list[bytes], env: dict[str, bytes], status: int, words: tuple[str, ...]
) -> None:
    code, _, err = _poolmon(args, _env(**env))
    assert code == status, err
    if b"--port=" + _NON_UTF8 in args:  # argparse: a usage line, then its one error line
        err = "\n".join(line for line in err.splitlines() if not line.startswith(("usage:", " ")))
    _one_error_line(err, *words)


def test_bad_sources_as_a_process_text_output(tmp_path: Path) -> None:
    missing = os.fsencode(tmp_path) + b"/" + _NON_UTF8 + b".jsonl"
    code, out, err = _poolmon([b"top", b"--once", b"http://[::1", b"--replay", missing])
    assert code == 1 and err == "", err  # nothing answered; no traceback, nothing on stderr
    assert "DOWN http://[::1: invalid URL: Invalid IPv6 URL" in out
    assert "No such file or directory" in out
