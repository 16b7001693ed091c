"""poolmon.demo."""
