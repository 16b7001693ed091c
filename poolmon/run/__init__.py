"""poolmon.run."""
