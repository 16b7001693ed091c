"""Every key's effect on the view state, and the decoding of raw terminal input."""

from __future__ import annotations

import pytest

from poolmon.errors import ConfigError
from poolmon.top.keys import decode_keys
from poolmon.top.model import SORT_KEYS
from poolmon.top.state import BACKSPACE, DOWN, ENTER, ESCAPE, UP, ViewState, apply_key


def _press(state: ViewState, keys: str | list[str], rows: int = 5) -> ViewState:
    for key in keys:
        state = apply_key(state, key, rows)
    return state


def test_sort_cycles_and_reverses() -> None:
    state = ViewState()
    assert _press(state, "s").sort == SORT_KEYS[1]
    assert _press(state, "S").sort == SORT_KEYS[-1]
    assert _press(state, "s" * len(SORT_KEYS)).sort == state.sort
    assert _press(state, "r").reverse is True
    assert _press(state, "rr").reverse is False


def test_filter_editing() -> None:
    state = _press(ViewState(), ["/", *"dbx", BACKSPACE])
    assert state.editing and state.draft == "db" and state.filter == ""
    assert _press(state, "q").quit is False  # q is text while typing
    kept = _press(state, [ENTER])
    assert not kept.editing and kept.filter == "db"
    cancelled = _press(kept, ["/", "z", ESCAPE])
    assert cancelled.filter == "db" and not cancelled.editing
    assert _press(kept, [ESCAPE]).filter == ""  # Esc on the table clears the filter


def test_pause_refresh_and_screens() -> None:
    state = ViewState(interval=1.0)
    assert _press(state, "p").paused and not _press(state, "pp").paused
    assert _press(state, "+").interval == 0.5
    assert _press(state, "++++++++").interval == 0.1
    assert _press(state, "-").interval == 2.0
    assert _press(state, "?").screen == "help"
    assert _press(state, ["?", ESCAPE]).screen == "table"
    assert _press(state, [ENTER]).screen == "detail"
    assert _press(state, "d", rows=0).screen == "table"  # nothing to detail
    assert _press(state, ["d", "q"]).quit


def test_selection_moves_within_rows() -> None:
    state = _press(ViewState(), [DOWN, DOWN, "j"], rows=2)
    assert state.selected == 1
    assert _press(state, [UP, "k", UP], rows=2).selected == 0


def test_bad_values_name_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"interval=0 is invalid: expected seconds within"):
        ViewState(interval=0)
    with pytest.raises(ConfigError, match="sort='x' is invalid"):
        ViewState(sort="x")


def test_decode_keys() -> None:
    assert decode_keys("s/ab\r") == ["s", "/", "a", "b", ENTER]
    assert decode_keys("\x1b[A\x1b[B\x1bOA") == [UP, DOWN, UP]
    assert decode_keys("\x1b") == [ESCAPE]
    assert decode_keys("\x1b[15~q") == ["q"]  # F5 skipped
    assert decode_keys("\x7f\x03") == [BACKSPACE]
