"""What the person at the terminal chose: sort, filter, pause, refresh, which screen. Pure.

:func:`apply_key` maps one key press to a new :class:`ViewState`; the live loop in
:mod:`poolmon.top.app` only reads keys and redraws, so every key's effect is unit-testable.

Keys: ``s``/``S`` next/previous sort key, ``r`` reverse, ``/`` edit the filter (Enter keeps it,
Esc restores the previous one), ``p`` or space pause, ``+``/``-`` refresh faster/slower, arrows or
``j``/``k`` move the selection, Enter or ``d`` detail of the selected pool, ``?`` help, Esc
back from detail/help (or clear the filter), ``q`` quit from anywhere but the filter prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from poolmon.errors import ConfigError
from poolmon.top.model import SORT_KEYS

__all__ = [
    "DOWN",
    "ENTER",
    "ESCAPE",
    "INTERVALS",
    "MAX_INTERVAL",
    "MIN_INTERVAL",
    "UP",
    "ViewState",
    "apply_key",
    "check_interval",
]

UP: Final = "up"
DOWN: Final = "down"
ENTER: Final = "enter"
ESCAPE: Final = "escape"
BACKSPACE: Final = "backspace"

MIN_INTERVAL: Final = 0.1
MAX_INTERVAL: Final = 3600.0
#: The steps ``+`` and ``-`` move through (an interval between steps snaps to the next one).
INTERVALS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def check_interval(value: float) -> float:
    """``value`` if it is a usable refresh interval, else :class:`ConfigError`."""
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ConfigError("interval", value, f"seconds within [{MIN_INTERVAL:g}, {MAX_INTERVAL:g}]")
    return value


@dataclass(frozen=True, slots=True)
class ViewState:
    sort: str = "saturation"
    reverse: bool = False
    filter: str = ""
    editing: bool = False  # typing a filter after ``/``
    draft: str = ""  # the filter being typed
    paused: bool = False
    interval: float = 1.0
    screen: str = "table"  # table | detail | help
    selected: int = 0  # index into the visible (sorted, filtered) rows
    quit: bool = False

    def __post_init__(self) -> None:
        if self.sort not in SORT_KEYS:
            raise ConfigError("sort", self.sort, "one of " + ", ".join(SORT_KEYS))
        check_interval(self.interval)


def _faster(interval: float) -> float:
    smaller = [i for i in INTERVALS if i < interval]
    return smaller[-1] if smaller else interval


def _slower(interval: float) -> float:
    larger = [i for i in INTERVALS if i > interval]
    return larger[0] if larger else interval


def _edit(state: ViewState, key: str) -> ViewState:
    if key == ENTER:
        return replace(state, editing=False, filter=state.draft, selected=0)
    if key == ESCAPE:
        return replace(state, editing=False, draft=state.filter)
    if key == BACKSPACE:
        return replace(state, draft=state.draft[:-1])
    if len(key) == 1 and key.isprintable():
        return replace(state, draft=state.draft + key)
    return state


def apply_key(state: ViewState, key: str, rows: int) -> ViewState:
    """The state after ``key`` (a character or one of the named keys), given ``rows`` visible."""
    if state.editing:
        return _edit(state, key)
    if key == "q":
        return replace(state, quit=True)
    if state.screen != "table":
        if key in (ESCAPE, "?", ENTER, "d"):
            return replace(state, screen="table")
        if key in ("p", " "):
            return replace(state, paused=not state.paused)
        return state
    return _table_key(state, key, rows)


def _table_key(state: ViewState, key: str, rows: int) -> ViewState:
    """A key on the table screen (not editing the filter)."""
    if key in ("s", "S"):
        step = 1 if key == "s" else -1
        index = (SORT_KEYS.index(state.sort) + step) % len(SORT_KEYS)
        return replace(state, sort=SORT_KEYS[index], selected=0)
    if key == "r":
        return replace(state, reverse=not state.reverse, selected=0)
    if key == "/":
        return replace(state, editing=True, draft=state.filter)
    if key in ("p", " "):
        return replace(state, paused=not state.paused)
    if key == "+":
        return replace(state, interval=_faster(state.interval))
    if key == "-":
        return replace(state, interval=_slower(state.interval))
    if key == "?":
        return replace(state, screen="help")
    return _navigate(state, key, rows)


def _navigate(state: ViewState, key: str, rows: int) -> ViewState:
    """Moving the selection, opening its detail, clearing the filter."""
    if key in (ENTER, "d"):
        return replace(state, screen="detail") if rows else state
    if key in (UP, "k"):
        return replace(state, selected=max(0, min(state.selected, rows - 1) - 1))
    if key in (DOWN, "j"):
        return replace(state, selected=max(0, min(state.selected + 1, rows - 1)))
    if key == ESCAPE and state.filter:
        return replace(state, filter="", draft="", selected=0)
    return state
