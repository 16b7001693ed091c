"""Upstream libraries' own pool test suites, run with poolmon's shims on (see
docs/upstream-tests.md)."""
