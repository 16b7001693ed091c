"""Fetch a library's sdist, extract its tests, and run them with and without poolmon's shim.

Used by ``test_upstream_suites.py``; also runnable by hand to see the full output::

    python -m tests.upstream.runner            # every suite
    python -m tests.upstream.runner urllib3    # one

The sdist of the *installed* version is downloaded once with ``pip download`` into
``.poolmon-test/upstream/`` (gitignored; ``POOLMON_UPSTREAM_CACHE`` overrides). Only the tests and
their helpers are extracted, never the library's source, so the installed library is the one
under test. Each mode runs in its own ``python -m pytest`` process with ``poolmon_plugin`` loaded:
``off`` is the baseline (poolmon is never imported), ``on`` instruments the library first.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.upstream.suites import SUITES, Suite

__all__ = [
    "FetchError",
    "RunResult",
    "cache_dir",
    "compare",
    "extract",
    "fetch_sdist",
    "installed_version",
    "main",
    "pg_bin",
    "prepare",
    "redis_server",
    "run_suite",
    "unmatched_deselects",
    "user_venv",
]

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = Path(__file__).resolve().parent
#: Seconds a single upstream test may take before pytest-timeout fails it (a hang is a result).
PER_TEST_TIMEOUT = 60

#: How outcomes are compared. ``xfail(strict=False)`` tests may pass or fail by upstream's own
#: declaration (some are timing dependent), so either result counts as the same outcome.
CATEGORY = {
    "passed": "pass",
    "failed": "fail",
    "error": "fail",
    "skipped": "skip",
    "xfailed": "xfail-marked",
    "xpassed": "xfail-marked",
}


class FetchError(RuntimeError):
    """The sdist could not be downloaded (no network, no such release)."""


def cache_dir() -> Path:
    return Path(os.environ.get("POOLMON_UPSTREAM_CACHE", REPO / ".poolmon-test" / "upstream"))


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _find_sdist(cache: Path, distribution: str, version: str) -> Path | None:
    suffix = f"-{version}.tar.gz"
    for path in cache.glob(f"*{suffix}"):
        if _canonical(path.name[: -len(suffix)]) == _canonical(distribution):
            return path
    return None


def fetch_sdist(distribution: str, version: str, cache: Path | None = None) -> Path:
    """The sdist of ``distribution==version``, downloaded with pip unless already cached."""
    cache = cache or cache_dir()
    found = _find_sdist(cache, distribution, version)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    # Download into a scratch directory first: a half-written archive never looks cached.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as scratch:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        # Only this distribution from source: ``:all:`` would build its build dependencies
        # (Cython for SQLAlchemy) from source too, minutes of compiling for nothing.
        cmd += ["--no-binary", distribution, f"{distribution}=={version}", "--dest", scratch]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired as exc:
            raise FetchError(f"pip download {distribution}=={version} timed out") from exc
        got = _find_sdist(Path(scratch), distribution, version)
        if done.returncode != 0 or got is None:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise FetchError(f"pip download {distribution}=={version} failed:\n{tail}")
        return Path(shutil.move(str(got), cache / got.name))


def extract(sdist: Path, members: tuple[str, ...], dest: Path) -> Path:
    """Extract the sdist's ``members`` (paths under its top directory) into ``dest``; idempotent."""
    marker = dest / ".complete"
    if marker.exists():
        return dest
    scratch = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with tarfile.open(sdist) as archive:
            chosen = []
            for info in archive.getmembers():
                inner = info.name.partition("/")[2]
                if not any(inner == m or inner.startswith(m + "/") for m in members):
                    continue
                if not (info.isfile() or info.isdir()):
                    continue  # no links or devices from an archive
                info.name = inner
                chosen.append(info)
            if not chosen:
                raise FetchError(f"{sdist.name} holds none of {', '.join(members)}")
            if hasattr(tarfile, "data_filter"):
                archive.extractall(scratch, members=chosen, filter="data")
            else:  # Python < 3.10.12: members were vetted above (regular files and dirs only)
                for info in chosen:
                    if info.name.startswith("/") or ".." in Path(info.name).parts:
                        raise FetchError(f"unsafe path in {sdist.name}: {info.name}")
                archive.extractall(scratch, members=chosen)
        (scratch / ".complete").write_text(sdist.name, encoding="utf-8")
        if dest.exists() and not marker.exists():
            shutil.rmtree(dest)  # an interrupted extraction of an older run
        try:
            scratch.rename(dest)
        except OSError:
            if not marker.exists():  # not just another process finishing the same extraction
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return dest


def prepare(suite: Suite, cache: Path | None = None) -> Path:
    """The extracted test tree of the installed version of ``suite.distribution``."""
    cache = cache or cache_dir()
    version = installed_version(suite.distribution)
    if version is None:
        raise FetchError(f"{suite.distribution} is not installed")
    sdist = fetch_sdist(suite.distribution, version, cache)
    return extract(sdist, suite.members, cache / f"{suite.distribution}-{version}")


#: The unprivileged account a suite with ``unprivileged=True`` runs as when we are root.
UNPRIVILEGED_USER = "postgres"


def pg_bin() -> str | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout), if any."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return str(found[-1].parent) if found else None


def user_venv(suite: Suite, cache: Path | None = None) -> Path:
    """A venv of the system Python with the installed version of ``suite.distribution``,
    pytest and pytest-timeout, readable by the unprivileged user (made once, cached)."""
    cache = cache or cache_dir()
    version = installed_version(suite.distribution)
    venv = cache / f"venv-{suite.distribution}-{version}"
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    base = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
    try:
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        pkgs = [f"{suite.distribution}=={version}", "pytest>=8", "pytest-timeout", "packaging"]
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *pkgs],
            check=True,
            timeout=600,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        raise FetchError(f"could not make the test venv {venv}: {exc}") from exc
    _readable(venv)
    (venv / ".complete").write_text(str(version), encoding="utf-8")
    return python


def _readable(path: Path) -> None:
    """a+rX below ``path`` (and on its parents), so the unprivileged user can read it."""
    for parent in [path, *path.parents]:
        if parent == REPO.parent:
            break
        with contextlib.suppress(OSError):
            parent.chmod(parent.stat().st_mode | 0o055)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames:
            p = Path(dirpath, name)
            p.chmod(p.stat().st_mode | 0o055)
        for name in filenames:
            p = Path(dirpath, name)
            p.chmod(p.stat().st_mode | (0o055 if p.stat().st_mode & 0o100 else 0o044))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str, workdir: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port, for this run alone.

    Private because redis-py's suite runs FLUSHALL and DEBUG: on the shared server it would
    wipe colleagues' keys, and DEBUG is refused there. Persistence is off; the process is ours
    and is stopped by its pid.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    cmd += ["--enable-debug-command", "yes"]  # redis >= 7.0; the suite's DEBUG ERROR tests need it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not _pong(port):
            if proc.poll() is not None:
                log = workdir / "redis.log"
                detail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {detail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {port}")
            time.sleep(0.05)  # polling the real server's state, with a deadline
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class RunResult:
    """One pytest process over the upstream files."""

    mode: str
    returncode: int
    report: dict[str, Any] | None
    log: Path
    seconds: float

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    @property
    def outcomes(self) -> dict[str, str]:
        return dict(self.report["outcomes"]) if self.report else {}


def run_suite(
    suite: Suite, root: Path, mode: str, workdir: Path, redis_url: str | None = None
) -> RunResult:
    """Run the suite's files in a subprocess with ``poolmon_plugin`` in ``mode`` (on/off)."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"{suite.shim}-{mode}.json"
    log = workdir / f"{suite.shim}-{mode}.log"
    report.unlink(missing_ok=True)
    python = sys.executable
    prefix: list[str] = []
    env = dict(os.environ)
    scratch: Path | None = None
    if suite.unprivileged:
        python = str(user_venv(suite))
        _readable(root)
        bindir = pg_bin()
        if bindir is not None:
            env["PGINSTALLATION"] = bindir
        # The report is written by the unprivileged process: a directory it may write.
        scratch = Path(tempfile.mkdtemp(prefix=f"poolmon-upstream-{suite.shim}-"))
        scratch.chmod(0o1777)
        env["HOME"] = str(scratch)
    target = report if scratch is None else scratch / report.name
    cmd = [python, "-m", "pytest", *suite.files, "-q", "-p", "no:cacheprovider"]
    # poolmon's own pytest plugin (the conformance kit, a pytest11 entry point) would import
    # poolmon into the library's suite, the baseline run included: it stays out of both.
    cmd += ["-p", "no:poolmon_conformance"]
    cmd += ["-p", "poolmon_plugin", "--poolmon-shim", suite.shim, "--poolmon-mode", mode]
    cmd += ["--poolmon-report", str(target), "--timeout", str(PER_TEST_TIMEOUT), *suite.args]
    cmd += [f"--deselect={d.prefix}" for d in suite.deselect]
    if redis_url is not None:
        cmd += ["--redis-url", redis_url]
    # The plugin is imported as a top-level module (upstream's own ``tests``/``test`` packages
    # would shadow ``tests.upstream``); the repo comes after it so poolmon imports even when it
    # is not installed. pytest puts the upstream root first on sys.path for its conftests.
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_DIR), str(REPO)])
    env.pop("PYTEST_ADDOPTS", None)
    if suite.unprivileged and os.geteuid() == 0:
        keep = ("PYTHONPATH", "PGINSTALLATION", "HOME", "CI")
        prefix = ["runuser", "-u", UNPRIVILEGED_USER, "--", "env"]
        prefix += [f"{k}={env[k]}" for k in keep if k in env]
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        # A session of its own, so a timeout can stop the run and anything it forked by group.
        proc = subprocess.Popen(
            [*prefix, *cmd],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(suite.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -1
            out.write(f"\npoolmon runner: stopped after {suite.timeout:.0f} s\n")
    if scratch is not None:
        if target.exists():
            shutil.copyfile(target, report)
        shutil.rmtree(scratch, ignore_errors=True)
    data = json.loads(report.read_text(encoding="utf-8")) if report.exists() else None
    return RunResult(mode, returncode, data, log, time.monotonic() - started)


def compare(baseline: dict[str, str], instrumented: dict[str, str]) -> list[str]:
    """Tests whose outcome category differs between the two runs, one line each."""
    out = []
    for nodeid in sorted(set(baseline) | set(instrumented)):
        before, after = baseline.get(nodeid, "absent"), instrumented.get(nodeid, "absent")
        if CATEGORY.get(before, before) != CATEGORY.get(after, after):
            out.append(f"{nodeid}: without poolmon {before}, with poolmon {after}")
    return out


def unmatched_deselects(suite: Suite, report: dict[str, Any]) -> list[str]:
    """Deselect entries that matched no collected test (renamed or removed upstream)."""
    chosen = report.get("deselected", [])
    return [d.prefix for d in suite.deselect if not any(n.startswith(d.prefix) for n in chosen)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "shims", nargs="*", help="redis, urllib3, sqlalchemy, asyncpg (default: all)"
    )
    args = parser.parse_args(argv)
    status = 0
    for suite in SUITES:
        if args.shims and suite.shim not in args.shims:
            continue
        root = prepare(suite)
        workdir = cache_dir() / "runs" / suite.shim
        results = []
        for mode in ("off", "on"):
            with contextlib.ExitStack() as stack:
                url = None
                if suite.redis_server:
                    binary = shutil.which("redis-server") or "redis-server"
                    url = stack.enter_context(redis_server(binary, workdir / f"redis-{mode}"))
                results.append(run_suite(suite, root, mode, workdir, url))
        off, on = results
        diffs = compare(off.outcomes, on.outcomes)
        for result in results:
            counts: dict[str, int] = {}
            for outcome in result.outcomes.values():
                counts[outcome] = counts.get(outcome, 0) + 1
            print(
                f"{suite.shim} {result.mode}: exit {result.returncode} in {result.seconds:.1f} s,",
                counts,
            )
        if on.report:
            print(f"  events {on.report['events']}; {len(on.report['pools'])} pools")
        print("  differences:", *(diffs or ["none"]), sep="\n    ")
        print(f"  logs: {off.log} {on.log}")
        status |= bool(diffs) or off.returncode != 0 or on.returncode != 0
    return status


if __name__ == "__main__":
    sys.exit(main())
