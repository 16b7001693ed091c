"""Check a JSONL event stream against the standard: each line, then the schema, then the state
machine.

Checking never stops at a bad line: every line gets at most a few problems and the next line is
checked as if the bad one were absent. Nothing a line contains can raise out of the checker (random
bytes, deep nesting, NaN, huge numbers); a failure of the checker itself is reported as rule
``internal`` on that line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from poolmon.conformance.machine import StateMachine
from poolmon.conformance.rules import Problem
from poolmon.core._spec_data import EVENT_SCHEMA
from poolmon.core.redact import scrub

__all__ = ["MAX_LINE_BYTES", "Validator", "read_lines", "validate_stream"]

#: Lines longer than this (in bytes, newline excluded) are reported and not parsed.
MAX_LINE_BYTES: Final = 64 * 1024

_MAX_SCHEMA_PROBLEMS: Final = 5  # per line: the first few say what is wrong; more is noise
_MAX_VALUE_CHARS: Final = 60  # values quoted in messages are cut to this


class Oversized:
    """Stands for a line that was too long to read (only its size is kept)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def read_lines(
    stream: IO[bytes], limit: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | Oversized]]:
    """Yield ``(line number, raw line)`` from a binary stream; memory bounded by ``limit``.

    A line over ``limit`` bytes is drained in chunks and yielded as :class:`Oversized`.
    """
    lineno = 0
    while True:
        chunk = stream.readline(limit + 2)  # content + "\r\n" still fits
        if not chunk:
            return
        lineno += 1
        if len(chunk) <= limit or (chunk.endswith(b"\n") and len(chunk.rstrip(b"\r\n")) <= limit):
            yield lineno, chunk
            continue
        size = len(chunk)
        while not chunk.endswith(b"\n"):
            chunk = stream.readline(limit)
            if not chunk:
                break
            size += len(chunk)
        yield lineno, Oversized(size)


class Validator:
    """A streaming checker: :meth:`check` each line in order, then :meth:`finish`.

    ``events`` counts the non-blank lines seen (each one is meant to be an event).
    """

    def __init__(self) -> None:
        self._schema = Draft202012Validator(EVENT_SCHEMA)
        self._by_kind = _validators_by_kind(EVENT_SCHEMA)
        self._machine = StateMachine()
        self.events = 0

    def check(self, lineno: int, raw: bytes | str | Oversized) -> list[Problem]:
        """Problems of one line (1-based ``lineno``); blank lines are skipped."""
        try:
            return self._check(lineno, raw)
        except Exception as exc:  # the checker's own bug: report it on this line, go on
            return [Problem(lineno, "internal", scrub(f"{type(exc).__name__}: {exc}"))]

    def finish(self) -> list[Problem]:
        """Problems only visible at the end of the stream."""
        return self._machine.finish()

    def _check(self, lineno: int, raw: bytes | str | Oversized) -> list[Problem]:
        if isinstance(raw, Oversized):
            self.events += 1
            return [_too_long(lineno, raw.size)]
        if isinstance(raw, bytes):
            if len(raw.rstrip(b"\r\n")) > MAX_LINE_BYTES:
                self.events += 1
                return [_too_long(lineno, len(raw))]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.events += 1
                return [
                    Problem(
                        lineno,
                        "encoding",
                        f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}",
                    )
                ]
        else:
            text = raw
            if len(text) > MAX_LINE_BYTES // 4 and len(text.encode("utf-8", "replace")) > (
                MAX_LINE_BYTES
            ):
                self.events += 1
                return [_too_long(lineno, len(text.encode("utf-8", "replace")))]
        if not text.strip():
            return []
        self.events += 1
        try:
            value = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return [Problem(lineno, "json", _json_message(exc))]
        if not isinstance(value, dict):
            return [Problem(lineno, "not-object", f"an event is a JSON object, got {_type(value)}")]
        schema_problems = self._schema_problems(lineno, value)
        if schema_problems:
            return schema_problems  # the state machine only sees well-formed events
        return self._machine.feed(lineno, value)

    def _schema_problems(self, lineno: int, event: Mapping[str, Any]) -> list[Problem]:
        kind = event.get("kind")
        schema = self._by_kind.get(kind, self._schema) if isinstance(kind, str) else self._schema
        errors = sorted(schema.iter_errors(event), key=_error_order)
        return [
            Problem(lineno, "schema", _schema_message(error, event))
            for error in errors[:_MAX_SCHEMA_PROBLEMS]
        ]


def validate_stream(lines: Iterable[bytes | str]) -> list[Problem]:
    """Check an event stream given as lines (str or bytes; numbered from 1); all problems."""
    validator = Validator()
    problems: list[Problem] = []
    for lineno, raw in enumerate(lines, start=1):
        problems.extend(validator.check(lineno, raw))
    problems.extend(validator.finish())
    return problems


def _validators_by_kind(schema: Mapping[str, Any]) -> dict[str, Draft202012Validator]:
    """One validator per event kind, each without the ``allOf`` blocks of the other kinds.

    A block whose ``if`` requires another ``kind`` can never apply, so dropping it changes no
    result; it saves evaluating ten ``if`` schemas per line (jsonschema's cost is per keyword).
    """
    blocks = schema.get("allOf", [])
    kinds = schema["properties"]["kind"]["enum"]
    out = {}
    for kind in kinds:
        kept = [b for b in blocks if _block_kind(b) in (None, kind)]
        specialised = {k: v for k, v in schema.items() if k != "allOf"}
        if kept:
            specialised["allOf"] = kept
        out[kind] = Draft202012Validator(specialised)
    return out


def _block_kind(block: Mapping[str, Any]) -> str | None:
    const = block.get("if", {}).get("properties", {}).get("kind", {}).get("const")
    return const if isinstance(const, str) else None


def _too_long(lineno: int, size: int) -> Problem:
    return Problem(
        lineno, "line-too-long", f"line of {size} bytes is over the limit of {MAX_LINE_BYTES}"
    )


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON value")


def _json_message(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, RecursionError):
        return "not JSON: nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON: {exc.msg} at column {exc.colno}"
    return f"not JSON: {exc}"


def _type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _error_order(error: ValidationError) -> tuple[int, str]:
    # Field-level errors (wrong type of "conn") before structural ones (missing "conn").
    return (0 if error.absolute_path else 1, "/".join(str(p) for p in error.absolute_path))


def _short(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 3] + "..."
    return text


def _schema_message(error: ValidationError, event: Mapping[str, Any]) -> str:
    """A short message that never echoes a long (or secret-bearing) value in full."""
    field = ".".join(str(p) for p in error.absolute_path) or None
    where = f"field {field!r}" if field else "event"
    kind = event.get("kind")
    context = f" (kind {kind})" if isinstance(kind, str) and len(kind) < 32 else ""
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        message = f"missing required field {missing!r}{context}"
    elif validator == "type":
        message = f"{where}: expected {schema.get('type')}, got {_type(error.instance)}"
    elif validator == "enum":
        allowed = ", ".join(str(v) for v in schema.get("enum", ()))
        message = f"{where}: {_short(error.instance)} is not one of: {allowed}"
    elif validator == "const":
        message = f"{where}: must be {_short(schema.get('const'))}{context}"
    elif validator == "not":
        banned = (
            error.validator_value.get("required", [])
            if isinstance(error.validator_value, dict)
            else []
        )
        fields = ", ".join(repr(str(b)) for b in banned) or "a field"
        message = f"{where}: {fields} not allowed here{context}"
    elif validator in ("maxLength", "minLength", "minimum", "maximum", "pattern"):
        message = f"{where}: {_short(error.instance)} violates {validator} {schema[validator]}"
    else:
        message = f"{where}: {_short(error.instance)} fails {validator}"
    return scrub(message)
