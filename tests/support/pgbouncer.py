"""A real PgBouncer for tests: Debian's ``pgbouncer`` on a free loopback port, in a temp dir.

Transaction pooling in front of the test PostgreSQL, an ``auth_file`` with an admin user and an
application user (both with passwords, so the secrets tests have something to leak), stopped and
restartable on the same port (the fault tests stop it mid-run).

with PgBouncer(pg_dsn, pool_size=3) as bouncer:
    bouncer.admin_dsn, bouncer.client_dsn(), bouncer.stop(), bouncer.start()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from tests.support.prometheus import free_port

__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "APP_PASSWORD", "APP_USER", "DATABASE", "PgBouncer"]

ADMIN_USER = "poolmon_i19_admin"
ADMIN_PASSWORD = "Adm1n-s3cret-i19"
APP_USER = "poolmon_i19_app"
APP_PASSWORD = "App-s3cret-i19"
#: The proxy database name (an alias of the test PostgreSQL's database).
DATABASE = "orders_i19"


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )


class PgBouncer:
    """One PgBouncer process; :meth:`stop` and :meth:`start` keep the port and the config."""

    def __init__(
        self,
        pg_dsn: str,
        *,
        pool_size: int = 3,
        max_client_conn: int = 60,
        binary: str | None = None,
    ) -> None:
        found = binary or pgbouncer_binary()
        if found is None:
            raise RuntimeError("pgbouncer is not installed (bash scripts/services installs it)")
        self.binary = found
        pg = urlsplit(pg_dsn)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="poolmon-pgbouncer-"))
        self.pg_host, self.pg_port = pg.hostname or "127.0.0.1", pg.port or 5432
        pg_user = pg.username or "postgres"
        pg_db = pg.path.lstrip("/") or "postgres"
        (self.dir / "users.txt").write_text(
            f'"{ADMIN_USER}" "{ADMIN_PASSWORD}"\n"{APP_USER}" "{APP_PASSWORD}"\n'
        )
        password = f" password={pg.password}" if pg.password else ""
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"{DATABASE} = host={self.pg_host} port={self.pg_port} dbname={pg_db} "
            f"user={pg_user}{password}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = md5\n"
            f"auth_file = {self.dir / 'users.txt'}\n"
            f"admin_users = {ADMIN_USER}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            f"max_client_conn = {max_client_conn}\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        self._user: str | None = None
        if os.geteuid() == 0:  # PgBouncer refuses to run as root: hand the dir to a user
            for candidate in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(candidate)
                except KeyError:
                    continue
                self._user = candidate
                for path in (self.dir, *self.dir.iterdir()):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
                break
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def admin_dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={ADMIN_USER} "
            f"password={ADMIN_PASSWORD}"
        )

    def admin_url(self, password: str = ADMIN_PASSWORD) -> str:
        return f"postgresql://{ADMIN_USER}:{password}@127.0.0.1:{self.port}/pgbouncer"

    def client_dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.port} dbname={DATABASE} user={APP_USER} "
            f"password={APP_PASSWORD}"
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        if self.running:
            return
        cmd = [self.binary]
        if self._user is not None:
            cmd += ["-u", self._user]
        cmd.append(str(self.dir / "pgbouncer.ini"))
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"pgbouncer exited at start: {err} {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): clients and servers are dropped, the port freed."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
