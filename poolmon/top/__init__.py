"""poolmon.top."""
