"""An unmodified program that forks workers like a pre-fork server (gunicorn -w N does the same).

Each worker makes N GET requests through urllib3, prints one line, then stays alive until the
parent is told (a line on stdin) to end; the parent reaps the workers and exits 0.

    python forking_app.py URL N WORKERS
"""

from __future__ import annotations

import os
import sys

import urllib3


def worker(url: str, n: int, index: int, release_fd: int) -> None:
    http = urllib3.PoolManager()
    for _ in range(n):
        http.request("GET", url).drain_conn()
    # One write(2) per line: print() may write the text and its newline separately, and the
    # workers share one stdout, so their lines could interleave.
    os.write(sys.stdout.fileno(), f"worker {index} did {n}\n".encode())
    os.read(release_fd, 1)  # blocks until the parent closes the pipe's write end
    os._exit(0)  # like gunicorn's workers: no atexit handlers


def main() -> int:
    url, n, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    release_r, release_w = os.pipe()
    pids = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            os.close(release_w)
            worker(url, n, index, release_r)
        pids.append(pid)
    os.close(release_r)
    sys.stdin.readline()
    os.close(release_w)  # every worker's read returns: they exit
    for pid in pids:
        os.waitpid(pid, 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
