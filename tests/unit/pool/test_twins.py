"""Pool and AsyncPool are two hand-written twins: this test fails when one changes without the
other. It reads both modules' source (no import tricks) and compares

* the methods: same names, except the pairs and one-sided methods declared below with why;
* the numbered invariants: the same list in both module docstrings, and the same numbers
  cited (``invariant N`` / ``inv. N``) in each pair of methods;
* the call graph into the shared rules (``poolmon/pool/_base.py``): each pair of methods
  calls the same ``BasePool`` helpers.

A change to a shared rule is made once, in ``_base.py``; a change to how one pool waits must
be mirrored (or declared here) in the other. docs/pool.md lists the deliberate pairs.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

import poolmon.pool

POOL_DIR = Path(poolmon.pool.__file__).parent
SYNC = POOL_DIR / "sync_pool.py"
ASYNC = POOL_DIR / "async_pool.py"
BASE = POOL_DIR / "_base.py"

#: Methods that are one logical step under two names (sync name -> async name).
PAIRS = {
    "_abandon": "_cancelled",  # an interrupted thread / a cancelled task gives back what it got
    "__enter__": "__aenter__",
    "__exit__": "__aexit__",
}
#: The borrow loop: threads split it in three (the lock is taken per step, never across a
#: blocking wait); asyncio runs it as one coroutine with its steps in helpers of their own
#: (checking out an entry, queueing, resolving the wait). Compared as one unit.
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "borrow loop": (
        ("_getconn_slow", "_next_entry", "_enqueue_locked"),
        ("_getconn_slow", "_check_out_or_put_back", "_enqueue_locked", "_wait_ended_locked"),
    ),
}
#: Methods only one twin has, and why.
SYNC_ONLY = {
    "_unwake_head_locked": "retracting a wake-up saves a futex call; futures need none",
}
ASYNC_ONLY = {
    "open": "the maintainer task needs a running loop, so AsyncPool starts in open()",
    "_expire": "the wait timer's callback (threads time out in lock.acquire)",
}

_CITE = re.compile(r"\b(?:invariants?|inv\.)\s+(\d+)")
_LISTED = re.compile(r"^(\d+)\. ", re.MULTILINE)


def _module(path: Path) -> tuple[ast.Module, list[str]]:
    source = path.read_text()
    return ast.parse(source), source.splitlines()


def _methods(path: Path, cls: str) -> dict[str, tuple[ast.AST, str]]:
    tree, lines = _module(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            out: dict[str, tuple[ast.AST, str]] = {}
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    text = "\n".join(lines[item.lineno - 1 : item.end_lineno])
                    out[item.name] = (item, text)
            return out
    raise AssertionError(f"class {cls} not found in {path.name}")


SYNC_M = _methods(SYNC, "Pool")
ASYNC_M = _methods(ASYNC, "AsyncPool")
BASE_M = _methods(BASE, "BasePool")


def _is_lock_wrapper(methods: dict[str, tuple[ast.AST, str]], name: str) -> bool:
    """``X`` that only runs the shared ``X_locked`` (under the lock, in Pool): a twin may
    have it or call ``X_locked`` directly (AsyncPool needs no lock)."""
    return f"{name}_locked" in BASE_M and f"{name}_locked" in _base_calls(methods, (name,))


def _one_sided(methods: dict[str, tuple[ast.AST, str]], other: Mapping[str, object]) -> set[str]:
    return {n for n in methods if n not in other and _is_lock_wrapper(methods, n)}


def _units() -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    grouped_sync = {n for s, _ in GROUPS.values() for n in s}
    grouped_async = {n for _, a in GROUPS.values() for n in a}
    units = [(label, s, a) for label, (s, a) in GROUPS.items()]
    for name in sorted(SYNC_M):
        if name in grouped_sync or name in SYNC_ONLY or name in WRAPPERS_SYNC:
            continue
        twin = PAIRS.get(name, name)
        units.append((name, (name,), (twin,)))
    assert not grouped_async & set(PAIRS.values())
    return units


def _text(methods: dict[str, tuple[ast.AST, str]], names: tuple[str, ...]) -> str:
    return "\n".join(methods[n][1] for n in names)


def _base_calls(methods: dict[str, tuple[ast.AST, str]], names: tuple[str, ...]) -> set[str]:
    """The BasePool helpers these methods call as ``self.name(...)``, looking through the
    twin's own lock wrappers (``self._free_slot()`` counts as ``_free_slot_locked``)."""
    called: set[str] = set()
    for n in names:
        for node in ast.walk(methods[n][0]):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and f"{node.func.attr}_locked" in BASE_M
                and node.func.attr in methods
                and node.func.attr != n
            ):
                called.add(f"{node.func.attr}_locked")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
                and node.func.attr in BASE_M
            ):
                called.add(node.func.attr)
    return called


WRAPPERS_SYNC = _one_sided(SYNC_M, ASYNC_M)
WRAPPERS_ASYNC = _one_sided(ASYNC_M, SYNC_M)
UNITS = _units()


def test_the_same_methods_on_both_sides() -> None:
    expected_async = {PAIRS.get(n, n) for n in SYNC_M if n not in set(SYNC_ONLY) | WRAPPERS_SYNC}
    for sync_names, async_names in GROUPS.values():
        expected_async -= set(sync_names)
        expected_async |= set(async_names)
    assert set(ASYNC_M) - set(ASYNC_ONLY) - WRAPPERS_ASYNC == expected_async
    for name in ASYNC_ONLY:
        assert name in ASYNC_M, f"ASYNC_ONLY lists {name}, which AsyncPool no longer has"
    for name in SYNC_ONLY:
        assert name in SYNC_M, f"SYNC_ONLY lists {name}, which Pool no longer has"


def test_no_twin_redefines_a_shared_rule() -> None:
    """A rule in _base.py is overridden by neither pool (that would be a silent fork)."""
    shared = set(BASE_M) - {"__init__", "_start", "_optional_points"}  # abstract hooks
    assert shared & set(SYNC_M) == set()
    assert shared & set(ASYNC_M) == set()


def test_both_docstrings_number_the_same_invariants() -> None:
    docs = [ast.get_docstring(_module(p)[0]) or "" for p in (SYNC, ASYNC)]
    numbers = [_LISTED.findall(d) for d in docs]
    assert numbers[0] == numbers[1] == [str(i) for i in range(1, len(numbers[0]) + 1)]
    assert len(numbers[0]) >= 6


@pytest.mark.parametrize(("label", "sync_names", "async_names"), UNITS, ids=[u[0] for u in UNITS])
def test_twins_cite_the_same_invariants(
    label: str, sync_names: tuple[str, ...], async_names: tuple[str, ...]
) -> None:
    cited_sync = set(_CITE.findall(_text(SYNC_M, sync_names)))
    cited_async = set(_CITE.findall(_text(ASYNC_M, async_names)))
    assert cited_sync == cited_async, f"{label}: Pool cites {cited_sync}, AsyncPool {cited_async}"


@pytest.mark.parametrize(("label", "sync_names", "async_names"), UNITS, ids=[u[0] for u in UNITS])
def test_twins_call_the_same_shared_rules(
    label: str, sync_names: tuple[str, ...], async_names: tuple[str, ...]
) -> None:
    assert _base_calls(SYNC_M, sync_names) == _base_calls(ASYNC_M, async_names), label


def test_every_cited_invariant_exists() -> None:
    listed = set(_LISTED.findall(ast.get_docstring(_module(SYNC)[0]) or ""))
    for path in (SYNC, ASYNC, BASE):
        cited = set(_CITE.findall(path.read_text()))
        assert cited <= listed, f"{path.name} cites {cited - listed}, not in the numbered list"


def test_the_comparison_would_catch_a_drift() -> None:
    """The checks are not vacuous: removing a helper call from one twin changes its graph."""
    sync_calls = _base_calls(SYNC_M, ("putconn",))
    assert "_settle_return_locked" in sync_calls
    assert sync_calls == _base_calls(ASYNC_M, ("putconn",))
    assert _base_calls(SYNC_M, ("run_maintenance",)) >= {"_sweep_idle_locked"}
