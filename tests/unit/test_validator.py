"""The conformance checker: examples, line handling, CLI contract, and robustness to any input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poolmon.cli import main as poolmon_main
from poolmon.conformance import MAX_LINE_BYTES, RULES, Validator, read_lines, validate_stream
from poolmon.conformance.cli import run_validate

EXAMPLES = Path(__file__).resolve().parents[2] / "spec" / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.jsonl"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.jsonl"))
EXPECTED = json.loads((EXAMPLES / "invalid" / "expected.json").read_text())

OPEN = '{"v":"1.0","kind":"open","ts":1.0,"pool":"p","max":2}'
CREATE = '{"v":"1.0","kind":"create","ts":1.0,"pool":"p","conn":1,"duration":0.1,"outcome":"ok"}'
BORROW = '{"v":"1.0","kind":"borrow","ts":1.0,"pool":"p","conn":1,"duration":0.0}'


def _check_file(path: Path) -> list[tuple[int, str]]:
    validator = Validator()
    found: list[tuple[int, str]] = []
    with path.open("rb") as stream:
        for lineno, raw in read_lines(stream):
            found.extend((p.line, p.rule) for p in validator.check(lineno, raw))
    found.extend((p.line, p.rule) for p in validator.finish())
    return found


def test_examples_exist() -> None:
    assert len(VALID) >= 5
    assert {p.name for p in INVALID} == set(EXPECTED)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_example_has_no_problem(path: Path) -> None:
    assert _check_file(path) == []


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_reports_exactly_the_expected_problems(path: Path) -> None:
    expected = [(p["line"], p["rule"]) for p in EXPECTED[path.name]["problems"]]
    assert sorted(_check_file(path)) == sorted(expected)


def test_every_rule_but_internal_has_an_invalid_example() -> None:
    covered = {p["rule"] for entry in EXPECTED.values() for p in entry["problems"]}
    assert covered == set(RULES) - {"internal"}


def test_checking_goes_on_after_bad_lines_with_right_line_numbers() -> None:
    lines: list[bytes | str] = [OPEN, "nope", b"\xff\xfe", "[]", "", CREATE, BORROW, BORROW]
    problems = validate_stream(lines)
    assert [(p.line, p.rule) for p in problems] == [
        (2, "json"),
        (3, "encoding"),
        (4, "not-object"),
        (8, "borrow-used"),
    ]


def test_huge_line_is_reported_not_parsed_and_reading_resumes() -> None:
    huge = b'{"v":"1.0","kind":"close","ts":1,"pool":"' + b"x" * (3 * MAX_LINE_BYTES) + b'"}'
    data = b"\n".join([OPEN.encode(), huge, CREATE.encode(), BORROW.encode(), huge]) + b"\n"
    validator = Validator()
    found: list[tuple[int, str]] = []
    for lineno, raw in read_lines(io.BytesIO(data)):
        found.extend((p.line, p.rule) for p in validator.check(lineno, raw))
    assert found == [(2, "line-too-long"), (5, "line-too-long")]
    assert validator.events == 5


def test_line_at_the_limit_is_parsed_and_crlf_is_accepted() -> None:
    prefix = '{"v":"1.0","kind":"close","ts":1,"pool":"p","message":"'
    fill = "m" * (MAX_LINE_BYTES - len(prefix) - 2)
    at_limit = (prefix + fill + '"}').encode()
    assert len(at_limit) == MAX_LINE_BYTES
    data = OPEN.encode() + b"\r\n" + at_limit + b"\r\n"
    lines = list(read_lines(io.BytesIO(data)))
    assert [n for n, _ in lines] == [1, 2]
    validator = Validator()
    problems = [p for n, raw in lines for p in validator.check(n, raw)]
    # Parsed, not refused as too long: the schema then limits a message to 4096 characters.
    assert [(p.line, p.rule) for p in problems] == [(2, "schema")]
    assert "maxLength 4096" in problems[0].message


def test_messages_never_echo_secrets_or_whole_values() -> None:
    line = json.dumps(
        {"v": "1.0", "kind": "postgresql://app:hunter2-pw@db/x", "ts": 1, "pool": "p" * 600}
    )
    problems = validate_stream([line])
    text = "\n".join(p.message for p in problems)
    assert {p.rule for p in problems} == {"schema"}
    assert "hunter2-pw" not in text
    assert "p" * 100 not in text


def test_run_validate_output_format_summary_and_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(f"{OPEN}\n{CREATE}\n{BORROW}\n")
    out = io.StringIO()
    assert run_validate(str(good), out=out) == 0
    assert out.getvalue() == "3 events, 0 problems\n"

    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{OPEN}\n{CREATE}\n{BORROW}\n{BORROW}\n")
    out = io.StringIO()
    assert run_validate(str(bad), out=out) == 1
    assert out.getvalue().splitlines() == [
        f"{bad}:4: borrow-used: connection 1 is already borrowed",
        "4 events, 1 problems",
    ]

    out, err = io.StringIO(), io.StringIO()
    assert run_validate(str(tmp_path / "missing.jsonl"), out=out, err=err) == 2
    assert "FILE=" in err.getvalue() and "expected a readable JSONL file" in err.getvalue()
    assert run_validate(str(tmp_path), out=out, err=io.StringIO()) == 2  # a directory

    out = io.StringIO()
    stdin = io.BytesIO(f"{OPEN}\n{BORROW}\n{BORROW}\n".encode())
    assert run_validate("-", stdin=stdin, out=out) == 1
    assert out.getvalue().startswith("<stdin>:3: borrow-used: ")
    assert not stdin.closed  # standard input is borrowed, never closed


def test_cli_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(f"{OPEN}\n{CREATE}\n")
    assert poolmon_main(["spec", "validate", str(path)]) == 0
    assert capsys.readouterr().out == "2 events, 0 problems\n"
    with pytest.raises(SystemExit) as exc:
        poolmon_main(["spec", "validate"])
    assert exc.value.code == 2


def test_command_reads_binary_garbage_from_stdin_without_traceback() -> None:
    garbage = b"\x00\xff{\n" + b"[" * 100_000 + b"\n" + b'{"v":"1.0"}\n'
    proc = subprocess.run(
        [sys.executable, "-m", "poolmon", "spec", "validate", "-"],
        input=garbage,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert b"Traceback" not in proc.stderr + proc.stdout
    out = proc.stdout.decode().splitlines()
    assert out[0].startswith("<stdin>:1: encoding: ")
    assert out[1].startswith("<stdin>:2: line-too-long: ")
    assert out[-1] == "3 events, 5 problems"  # line 3: three missing fields


_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_FIELDS = ["pid", "conn", "duration", "outcome", "reason", "age",
           "error_type", "phase", "pending", "queued", "max", "message"]  # fmt: skip
_KINDS = ["open", "create", "validate", "wait", "borrow", "return", "evict", "error", "close"]
_event_like = st.fixed_dictionaries(
    {
        "v": st.just("1.0") | _json_scalars,
        "kind": st.sampled_from(_KINDS),
        "ts": st.just(1.0) | _json_scalars,
        "pool": st.sampled_from(["p", "q"]),
    },
    optional={f: _json_scalars | st.integers(0, 3) for f in _FIELDS},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data: bytes) -> None:
    validator = Validator()
    for lineno, raw in read_lines(io.BytesIO(data), limit=64):
        for problem in validator.check(lineno, raw):
            assert problem.rule in RULES and problem.rule != "internal"
    validator.finish()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=60) | _json.map(json.dumps), max_size=8))
def test_malformed_lines_never_raise(lines: list[str]) -> None:
    for problem in validate_stream(lines):
        assert problem.rule in RULES and problem.rule != "internal"


@settings(max_examples=100, deadline=None)
@given(st.lists(_event_like, max_size=12))
def test_event_like_objects_never_raise(events: list[dict[str, object]]) -> None:
    lines = [json.dumps(e) for e in events]
    for problem in validate_stream(lines):
        assert problem.rule in RULES and problem.rule != "internal", problem
