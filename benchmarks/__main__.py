"""Runner: ``python -m benchmarks [NAME|all] [options]``."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def _names() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = _names()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m benchmarks NAME|all [options]\n\nbenchmarks:")
        for name in names:
            doc = (importlib.import_module(f"benchmarks.{name}").__doc__ or "").strip()
            print(f"  {name:22s} {doc.splitlines()[0] if doc else ''}")
        return 0
    chosen = names if argv[0] == "all" else [argv[0]]
    status = 0
    for name in chosen:
        if name not in names:
            print(f"unknown benchmark {name!r}; known: {', '.join(names)}", file=sys.stderr)
            return 2
        print(f"\n### {name}")
        status |= importlib.import_module(f"benchmarks.{name}").main(argv[1:])
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
