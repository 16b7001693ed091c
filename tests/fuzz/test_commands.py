"""Every command, every parameter, nasty values: exit status 2 and one stderr line naming the
parameter and what it accepts, or (top's sources) that source shown down while the rest works.
Never a traceback. The table of commands is :data:`tests.fuzz.commands.COMMANDS`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from poolmon.exporters.prometheus import MetricsServer
from tests.fuzz.commands import COMMANDS, CommandSpec, Param, all_params
from tests.fuzz.conftest import FUZZ, GOOD_POOL
from tests.fuzz.harness import Outcome, error_lines, invoke
from tests.fuzz.strategies import Places

#: Words that say what is accepted (ConfigError's "expected ...", argparse's own wording).
_ACCEPTED = ("expected", "invalid int value", "invalid float value", "invalid choice")

_BY_ID = {f"{s.name}:{p.name}": (s, p) for s, p in all_params()}


def _argv(spec: CommandSpec, param: Param, value: str) -> tuple[list[str], dict[str, str]]:
    env = {**spec.env, **dict(param.env)}
    if param.is_env:
        return [*spec.head, *spec.tail], {**env, param.name: value}
    arg = value if param.is_positional else f"{param.name}={value}"
    return [*spec.head, arg, *spec.tail], env


def check_usage_error(outcome: Outcome, param: Param, status: int) -> None:
    assert outcome.crash is None, outcome.describe()
    assert "Traceback" not in outcome.err, outcome.describe()
    assert outcome.exec_argv is None, outcome.describe()
    assert outcome.status == status, outcome.describe()
    lines = error_lines(outcome.err)
    assert len(lines) == 1, outcome.describe()
    (line,) = lines
    assert line.startswith("poolmon"), outcome.describe()
    assert any(name in line for name in (param.name, *param.also)), outcome.describe()
    assert any(word in line for word in _ACCEPTED), outcome.describe()


def check_source_down(outcome: Outcome, good: str, *, replay: bool) -> None:
    """``top --once --json`` with a bad source, a closed port and the good source: the good
    pool is shown; the others are listed down with a one-line reason (an empty or new log may
    be up with no pools)."""
    assert outcome.crash is None, outcome.describe()
    assert "Traceback" not in outcome.err, outcome.describe()
    assert outcome.status == 0, outcome.describe()
    doc = json.loads(outcome.out)
    assert [p["name"] for p in doc["pools"]] == [GOOD_POOL], outcome.describe()
    sources = doc["sources"]
    assert len(sources) == 3, outcome.describe()
    goods = [s for s in sources if s["source"] == good]
    assert len(goods) == 1 and goods[0]["ok"], outcome.describe()
    others = [s for s in sources if s["source"] != good]
    for source in others:
        if not source["ok"]:
            assert source["error"] and "\n" not in source["error"], outcome.describe()
        else:
            assert replay and source["pools"] == 0, outcome.describe()


@pytest.mark.parametrize("case", list(_BY_ID))
@FUZZ
@given(data=st.data())
def test_bad_value_is_refused_or_shown(
    case: str, places: Places, good_source: MetricsServer, data: st.DataObject
) -> None:
    spec, param = _BY_ID[case]
    value = places.resolve(data.draw(param.bad, label=param.name))
    if param.outcome == "usage":
        argv, env = _argv(spec, param, value)
        check_usage_error(invoke(argv, env), param, spec.usage_status)
        return
    # A source, given with the good one (positionals together: argparse reads them in one run).
    if param.is_positional:
        argv = [*spec.head, value, good_source.url]
    else:
        argv = [*spec.head, good_source.url, param.name, value]
    check_source_down(invoke(argv), good_source.url, replay=param.name == "--replay")


def test_every_command_is_in_the_table() -> None:
    """A new subcommand must be added to the fuzz table (tests/fuzz/commands.py)."""
    from poolmon.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    covered = {spec.head[0] for spec in COMMANDS}
    assert set(sub.choices or ()) <= covered, set(sub.choices or ()) - covered
