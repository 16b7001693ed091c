"""Public alias of :mod:`poolmon.exporters.otel`.

>>> import poolmon.otel
>>> bridge = poolmon.otel.enable()  # doctest: +SKIP  (the global MeterProvider)
"""

from poolmon.exporters.otel import SCOPE_NAME, OtelBridge, OtlpHandle, enable, start_otlp

__all__ = ["SCOPE_NAME", "OtelBridge", "OtlpHandle", "enable", "start_otlp"]
