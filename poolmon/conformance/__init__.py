"""The standard's conformance checker: schema and per-connection state machine.

>>> from poolmon.conformance import validate_stream
>>> validate_stream(['{"v": "1.0", "kind": "close", "ts": 1.0, "pool": "p"}'])
[]

The command-line form is ``poolmon spec validate FILE|-``.
"""

from poolmon.conformance.rules import RULES, Problem
from poolmon.conformance.validator import MAX_LINE_BYTES, Validator, read_lines, validate_stream

__all__ = ["MAX_LINE_BYTES", "RULES", "Problem", "Validator", "read_lines", "validate_stream"]
