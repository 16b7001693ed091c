"""`python -m dashboards [build [--check] [--output DIR]]` from the repository root.

Same as ``poolmon dashboards``; with no arguments it rebuilds the JSON in this directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    # Running from a source checkout: make the poolmon package importable without an install.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from poolmon.dashboards.cli import main

    raise SystemExit(main())
