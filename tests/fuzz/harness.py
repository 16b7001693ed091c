"""Run ``poolmon`` in-process as a user would meet it, and judge what it said.

:func:`invoke` calls :func:`poolmon.cli.main` with stdout and stderr replaced by streams that
encode like the real ones (stdout strict UTF-8, stderr ``backslashreplace``), ``os.environ``
overridden for the call and ``os.execvpe`` stopped (``poolmon run`` would replace the test
process) and DNS answered "not found" for every name (fuzzed hosts never leave the machine):
whatever escapes ``main`` is kept as the crash text instead of failing the test
inside the harness.
"""

from __future__ import annotations

import faulthandler
import io
import ipaddress
import os
import socket
import sys
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from poolmon.cli import main

__all__ = ["Outcome", "error_lines", "invoke", "overridden_environ"]

#: No single invocation needs more than a few seconds (every source times out within 1 s).
_HANG_SECONDS = 60


class _Exec(Exception):
    """``os.execvpe`` was reached: the command would have started the program."""

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(list(argv))
        self.argv = list(argv)


@dataclass(frozen=True)
class Outcome:
    argv: tuple[str, ...]
    status: int | None
    out: str
    err: str
    #: The program ``poolmon run`` would have exec'd (None: it stopped before).
    exec_argv: list[str] | None = None
    #: The traceback of an exception that escaped ``main`` (None: none did).
    crash: str | None = None

    def describe(self) -> str:
        return (
            f"argv={list(self.argv)!r}\nstatus={self.status!r} exec={self.exec_argv!r}\n"
            f"--- stderr\n{self.err}--- stdout\n{self.out[:2000]}\n--- crash\n{self.crash}"
        )


@contextmanager
def overridden_environ(env: Mapping[str, str | None]) -> Iterator[None]:
    """``os.environ`` with ``env`` applied (None removes a variable), restored afterwards."""
    saved = dict(os.environ)
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _no_exec(file: str, args: Sequence[str], env: Any) -> NoReturn:
    raise _Exec(args)


_real_getaddrinfo = socket.getaddrinfo


def _literal_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    """getaddrinfo for IP literals only: a fuzzed host name never reaches DNS."""
    text = host.decode("ascii", "replace") if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
    return _real_getaddrinfo(host, *args, **kwargs)


def invoke(argv: Sequence[str], env: Mapping[str, str | None] | None = None) -> Outcome:
    """``poolmon ARGV`` in this process; never raises."""
    out_raw, err_raw = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_raw, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_raw, encoding="utf-8", errors="backslashreplace", write_through=True)
    saved = sys.stdout, sys.stderr, os.execvpe, socket.getaddrinfo
    status: int | None = None
    crash: str | None = None
    exec_argv: list[str] | None = None
    # Everything a command reads from the environment is set by the case, never inherited.
    clean = {k: None for k in os.environ if k.startswith("POOLMON_")}
    with overridden_environ({**clean, **(env or {})}):
        sys.stdout, sys.stderr = out, err
        # A value wrongly accepted must not hang the suite: dump every stack and end the run.
        assert sys.__stderr__ is not None  # the test process's own stderr, never closed
        faulthandler.dump_traceback_later(_HANG_SECONDS, exit=True, file=sys.__stderr__)
        os.execvpe, socket.getaddrinfo = _no_exec, _literal_only  # type: ignore[assignment]
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse: usage errors (2), --help (0)
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except _Exec as exc:
            exec_argv = exc.argv
        except BaseException:
            crash = traceback.format_exc()
        finally:
            faulthandler.cancel_dump_traceback_later()
            sys.stdout, sys.stderr, os.execvpe, socket.getaddrinfo = saved
            try:
                out.flush()
                err.flush()
            except Exception:
                crash = (crash or "") + traceback.format_exc()
    return Outcome(
        tuple(argv),
        status,
        out_raw.getvalue().decode("utf-8", "replace"),
        err_raw.getvalue().decode("utf-8", "replace"),
        exec_argv,
        crash,
    )


def error_lines(err: str) -> list[str]:
    """stderr without argparse's usage block (``usage: ...`` and its indented continuation)."""
    lines: list[str] = []
    in_usage = False
    for line in err.splitlines():
        if line.startswith("usage:"):
            in_usage = True
            continue
        if in_usage and (line.startswith(" ") or not line.strip()):
            continue
        in_usage = False
        lines.append(line)
    return lines
