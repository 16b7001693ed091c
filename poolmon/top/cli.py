"""``poolmon top``: watch pools live from /metrics URLs, a Prometheus server or a JSONL log.

Imports rich and the rest of ``poolmon.top`` only inside the handler, so ``poolmon --help`` works
without the ``top`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any, Final

from poolmon.exitstatus import FAILED, OK, USAGE, HelpFormatter, epilog, usage_error

__all__ = ["DEFAULT_URL", "EXIT_STATUSES", "STATUSES", "register"]

#: Where poolmon's Prometheus exporter listens by default.
DEFAULT_URL: Final = "http://127.0.0.1:9464/metrics"

_ONCE_WIDTH: Final = 400

#: Exit statuses and what they mean (docs/*.md lists the same; a test compares them).
STATUSES: Final[Mapping[int, str]] = {
    OK: "quit with q; with --once: at least one source answered",
    FAILED: "with --once: no source answered (each is listed DOWN with its reason)",
    USAGE: "a bad option (the message names it and what it accepts), or the top extra is missing",
    130: "interrupted (Ctrl-C)",
    143: "terminated (SIGTERM); the terminal is restored either way",
}
EXIT_STATUSES: Final = epilog(
    STATUSES,
    before="Keys: s sort, r reverse, / filter, p pause, +/- refresh, Enter detail, ? help, "
    "q quit.\nA source that cannot be read (a bad URL, a missing log) is shown DOWN with the "
    "reason; the\nothers carry on.",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "top",
        help="Live terminal monitor of pools (one process or a fleet)",
        description=(
            "Live terminal monitor of connection pools. Reads one or more /metrics URLs (a fleet "
            "view with totals per backend), a Prometheus server, or a JSONL event log. With no "
            f"source it reads {DEFAULT_URL}."
        ),
        epilog=EXIT_STATUSES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "urls", nargs="*", metavar="URL", help="/metrics endpoints (host:port is enough)"
    )
    parser.add_argument(
        "--prometheus", metavar="URL", action="append", default=[], help="a Prometheus server"
    )
    parser.add_argument(
        "--window",
        default="1m",
        metavar="DURATION",
        help="with --prometheus: PromQL range of rates and recent wait quantiles (1m; at least "
        "two scrape intervals)",
    )
    parser.add_argument(
        "--replay", metavar="FILE", action="append", default=[], help="a JSONL event log"
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="refresh every S seconds (1)"
    )
    from poolmon.top.model import SORT_KEYS  # pure data, no optional dependency

    parser.add_argument(
        "--sort", choices=SORT_KEYS, default="saturation", help="sort key (saturation)"
    )
    parser.add_argument("--reverse", action="store_true", help="reverse the sort order")
    parser.add_argument("--filter", default="", metavar="TEXT", help="show matching pools only")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="per source (5)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--json", action="store_true", help="with --once: print JSON")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        from poolmon.top.app import TopApp, print_once
        from poolmon.top.sources import (
            MetricsUrlSource,
            PrometheusSource,
            ReplaySource,
            Source,
            check_window,
        )
        from poolmon.top.state import ViewState
    except ImportError as exc:  # pragma: no cover - depends on the install
        print(
            f"poolmon top needs the 'top' extra: pip install 'poolmon[top]' ({exc})",
            file=sys.stderr,
        )
        return 2
    from poolmon.errors import ConfigError

    if args.json and not args.once:
        return usage_error("top", "--json is invalid without --once: expected --once --json")
    try:
        if not 0 < args.timeout <= 300:
            raise ConfigError("timeout", args.timeout, "seconds within (0, 300]")
        state = ViewState(
            sort=args.sort, reverse=args.reverse, filter=args.filter, interval=args.interval
        )
        check_window(args.window)
    except ConfigError as exc:
        # Name the option as typed (the checks are shared with the Python API's names).
        return usage_error("top", str(ConfigError(f"--{exc.parameter}", exc.value, exc.accepted)))
    sources: list[Source] = [MetricsUrlSource(u, timeout=args.timeout) for u in args.urls]
    sources += [
        PrometheusSource(u, timeout=args.timeout, window=args.window) for u in args.prometheus
    ]
    sources += [ReplaySource(p) for p in args.replay]
    if not sources:
        sources.append(MetricsUrlSource(DEFAULT_URL, timeout=args.timeout))
    app = TopApp(sources, state=state, fetch_timeout=args.timeout)
    if args.once:
        if not sys.stdout.isatty():
            # Into a file or a pipe: never wrap or cut rows at rich's default 80 columns.
            from rich.console import Console

            app.console = Console(width=_ONCE_WIDTH)
        frame = app.refresh()
        print_once(frame, state, as_json=args.json, console=app.console)
        return OK if any(s.ok for s in frame.sources) else FAILED
    return app.run()
