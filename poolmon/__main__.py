"""``python -m poolmon`` is the ``poolmon`` command."""

from poolmon.cli import main

raise SystemExit(main())
