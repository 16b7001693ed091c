"""The standard's conformance checker: schema and per-connection state machine."""
