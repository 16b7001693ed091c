"""``poolmon demo``: the embedded demo workload, served on /metrics and shown in ``poolmon top``.

Imports the pool, exporter and top only inside the handler (``poolmon --help`` needs no extra).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

from poolmon.errors import ConfigError
from poolmon.exitstatus import OK, USAGE, HelpFormatter, epilog, usage_error

__all__ = ["DEFAULT_PORT", "EXIT_STATUSES", "STATUSES", "register"]

#: The Prometheus exporter's default port, so a plain ``poolmon top`` elsewhere finds the demo.
DEFAULT_PORT: Final = 9464

#: Exit statuses and what they mean (docs/*.md lists the same; a test compares them).
STATUSES: Final[Mapping[int, str]] = {
    OK: "stopped by q, Ctrl-C, SIGTERM or at the end of --duration",
    USAGE: "a bad option, a --port that cannot be bound, or the demo extra is missing",
}
EXIT_STATUSES: Final = epilog(STATUSES)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Run the embedded demo workload and watch it in poolmon top",
        description=(
            "Run a workload over poolmon's own pool (sqlite3) and urllib3 (an in-process HTTP "
            "server) that goes through calm, burst, outage and leak phases; serve its metrics "
            "on a loopback /metrics endpoint and show them in poolmon top. Needs no external "
            "service. Ctrl-C (or q in the monitor) ends it."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--no-tui", action="store_true", help="only serve /metrics (watch it from elsewhere)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        metavar="N",
        help=f"/metrics port on 127.0.0.1 (default {DEFAULT_PORT}, or a free one if taken; 0: any)",
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=8.0, metavar="S", help="length of each phase (8)"
    )
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh (1)")
    parser.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> str | None:
    """The first bad option as a message naming it (None: all fine). Everything is checked
    before anything starts: a value refused later would leave a half-started demo."""
    from poolmon.top.state import MAX_INTERVAL, MIN_INTERVAL

    duration, phase, interval, port = args.duration, args.phase_seconds, args.interval, args.port
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        return str(ConfigError("--duration", duration, "seconds > 0"))
    if not 0.2 <= phase <= 3600:  # DemoWorkload's range (NaN fails every comparison)
        return str(ConfigError("--phase-seconds", phase, "seconds within [0.2, 3600]"))
    if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        return str(
            ConfigError("--interval", interval, f"seconds within [{MIN_INTERVAL}, {MAX_INTERVAL}]")
        )
    if port is not None and not 0 <= port <= 65535:
        return str(ConfigError("--port", port, "an integer in [0, 65535] (0: any free port)"))
    return None


def _say(text: str) -> None:
    print(f"poolmon demo: {text}", flush=True)


def _run(args: argparse.Namespace) -> int:
    try:
        from poolmon.core.registry import get_default_registry
        from poolmon.demo.signals import StopSignals, held
        from poolmon.demo.workload import DemoWorkload
        from poolmon.exporters.prometheus import MetricsServer, serve
        from poolmon.top.app import Terminated, TopApp
        from poolmon.top.sources import MetricsUrlSource
        from poolmon.top.state import ViewState
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(
            f"poolmon demo needs the 'demo' extra: pip install 'poolmon[demo]' ({exc})",
            file=sys.stderr,
        )
        return 2
    problem = _check(args)
    if problem is not None:
        return usage_error("demo", problem)
    registry = get_default_registry()
    # Handlers first, whatever the process inherited (SIGINT may come in *ignored* from a
    # non-interactive shell): a stop signal at any moment from here on ends the demo cleanly.
    with StopSignals(Terminated) as signals:
        server: MetricsServer | None = None
        workload: DemoWorkload | None = None
        quiet = None
        try:
            # Setup runs with the stop signals held (poolmon.demo.signals): a signal that comes
            # meanwhile is raised at the end of this block, never halfway through a start().
            with held():
                try:
                    state = ViewState(interval=args.interval)
                    workload = DemoWorkload(
                        registry=registry,
                        phase_seconds=args.phase_seconds,
                        on_phase=(lambda p: _say(f"phase {p.name}: {p.description}"))
                        if args.no_tui
                        else None,
                    )
                    server = _serve(serve, args.port, registry)
                except (ConfigError, OSError) as exc:
                    return usage_error("demo", str(exc))
                _say(f"serving {server.url}  (watch with: poolmon top {server.url})")
                deadline = None if args.duration is None else time.monotonic() + args.duration
                quiet = None if args.no_tui else _quiet_logs()
                workload.start()
            if args.no_tui:
                _wait(deadline)
            else:
                app = TopApp([MetricsUrlSource(server.url)], state=state, banner=workload.describe)
                app.run(until=deadline)
        except (KeyboardInterrupt, Terminated):
            pass  # Ctrl-C / SIGTERM: a clean stop is the expected way out
        finally:
            signals.ignore()  # the stop is bounded (DemoWorkload.stop); a second Ctrl-C waits
            if workload is not None:
                workload.stop()
            if server is not None:
                server.close()
            if quiet is not None:
                quiet()
    _say("stopped")
    return OK


def _quiet_logs() -> Any:
    """While the monitor owns the screen, poolmon's (rate-limited) warnings would scribble over
    it: the monitor shows the same failures as numbers. Returns the undo function."""
    import logging

    logger = logging.getLogger("poolmon")
    handler = logging.NullHandler()
    previous = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.propagate = previous

    return undo


def _serve(serve: Any, port: int | None, registry: Any) -> Any:
    if port is not None:
        return serve(port, registry=registry)
    try:
        return serve(DEFAULT_PORT, registry=registry)
    except OSError:
        _say(f"port {DEFAULT_PORT} is taken; using a free one")
        return serve(0, registry=registry)


def _wait(deadline: float | None) -> None:
    import threading

    forever = threading.Event()
    while deadline is None or time.monotonic() < deadline:
        # Event.wait in slices: Ctrl-C is delivered between slices on every platform.
        forever.wait(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
