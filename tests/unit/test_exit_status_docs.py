"""Each command's exit statuses: the same in its --help epilog, in the code's table and in docs/."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from poolmon.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]

#: (command words, module with STATUSES, doc file, section heading).
COMMANDS = [
    (["demo"], "poolmon.demo.cli", "docs/top.md", "## Exit status (`poolmon demo`)"),
    (["top"], "poolmon.top.cli", "docs/top.md", "## Exit status (`poolmon top`)"),
    (["run"], "poolmon.run.cli", "docs/run.md", "## Exit status (`poolmon run`)"),
    (
        ["spec", "validate"],
        "poolmon.conformance.cli",
        "docs/spec-validate.md",
        "## Exit status (`poolmon spec validate`)",
    ),
    (
        ["dashboards", "build"],
        "poolmon.dashboards.cli",
        "docs/dashboards.md",
        "## Exit status (`poolmon dashboards build`)",
    ),
]


def _help(words: list[str]) -> str:
    parser = build_parser()
    for word in words:
        choices = next(
            a.choices
            for a in parser._actions
            if isinstance(a.choices, dict) and word in a.choices  # the subcommands' action
        )
        parser = choices[word]
    return " ".join(parser.format_help().split())


@pytest.mark.parametrize(("words", "module", "doc", "heading"), COMMANDS)
def test_help_and_docs_list_the_statuses_of_the_code(
    words: list[str], module: str, doc: str, heading: str
) -> None:
    statuses = importlib.import_module(module).STATUSES
    assert 2 in statuses  # every command has usage errors
    text = (ROOT / doc).read_text()
    assert heading in text
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    listed = [line for line in section.splitlines() if line.startswith("- `")]
    assert listed == [f"- `{code}`: {meaning}" for code, meaning in sorted(statuses.items())]
    helped = _help(words)
    assert "exit status:" in helped
    for code, meaning in statuses.items():
        assert f"{code} {' '.join(meaning.split())}" in helped, (code, helped)
