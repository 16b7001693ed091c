"""Exporters: OpenTelemetry metrics (OTLP) and Prometheus exposition, reading snapshots."""
