"""Backend CPU of polling PgBouncer and PostgreSQL every 10 s, against an idle baseline; bar < 1 %.

What the poller costs the servers it reads, not the poller itself: the CPU time (utime + stime
from /proc/<pid>/stat) of the PostgreSQL backend process serving the poller's own session and of
a private PgBouncer process (started here on a free port, serving nobody else), over N
back-to-back polls, minus the same processes' CPU over an idle window of the same length (the
baseline: what they burn anyway). The cost per poll divided by the 10 s interval is the share of
one core the poller takes from the backends. Needs pgbouncer (scripts/services installs it) and
the test PostgreSQL (POOLMON_TEST_PG_DSN).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from poolmon.backends import PgBouncerReader, PostgresReader

BAR = 0.01  # share of one core at the default 10 s interval
INTERVAL = 10.0
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15, after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _measure(pids: dict[str, int], seconds: float, work: object = None) -> dict[str, float]:
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        if callable(work):
            work()
            polls += 1
        else:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    out = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
    out["polls"] = float(polls)
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks backends")
    parser.add_argument("--seconds", type=float, default=4.0, help="each window (4)")
    args = parser.parse_args(argv)
    from tests.support.pgbouncer import PgBouncer

    pg_dsn = os.environ.get("POOLMON_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    with PgBouncer(pg_dsn) as bouncer:
        pgb = PgBouncerReader(bouncer.admin_dsn)
        pg = PostgresReader(pg_dsn)
        try:
            pgb.read()
            pg.read()  # connected: the processes below exist from now on
            assert bouncer.pid is not None
            pids = {"pgbouncer": bouncer.pid, "postgres backend": pg._conn.info.backend_pid}

            def poll() -> None:
                pgb.read()
                pg.read()

            idle = _measure(pids, args.seconds)
            busy = _measure(pids, args.seconds, poll)
        finally:
            pgb.close()
            pg.close()
    polls = busy.pop("polls")
    idle.pop("polls")
    print(f"{int(polls)} polls of PgBouncer + PostgreSQL in {args.seconds:g}s; idle window "
          f"{args.seconds:g}s; CPU from /proc/<pid>/stat ({_TICK} ticks/s)")  # fmt: skip
    total = 0.0
    for name in pids:
        per_poll = max(0.0, busy[name] - idle[name]) / polls
        total += per_poll
        print(f"  {name:18s} busy {busy[name] * 1e3:8.1f} ms  idle {idle[name] * 1e3:6.1f} ms  "
              f"-> {per_poll * 1e6:8.1f} us CPU per poll")  # fmt: skip
    share = total / INTERVAL
    verdict = "ok" if share < BAR else "MISSED"
    print(f"  every {INTERVAL:g}s: {share * 100:.4f} % of one core (bar < {BAR * 100:g} %) "
          f"{verdict}")  # fmt: skip
    return 0 if share < BAR else 1
