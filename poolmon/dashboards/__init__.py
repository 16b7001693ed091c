"""poolmon.dashboards."""
