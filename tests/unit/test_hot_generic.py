"""The compiled module is library-agnostic: no library's names in its source, and its generic
kinds do what their parameters say, checked against a small fake library with the lane open.

The fake pool stands in for no real library: it is the smallest object that has what the hooks
are parametrised with (a pool link, connection links, an idle container, an ownership
attribute). The real libraries' parity runs are in tests/integration/compiled.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from poolmon.core import compiled
from poolmon.shims import _psycopg_common, _redis_common, _urllib3_state

SOURCE = Path(compiled.__file__).resolve().parent.parent / "_hot.c"

BOUNDS = (0.001, 0.01, 0.1, 1.0)


@pytest.fixture
def hot() -> Any:
    module = compiled.compiled_module()
    if module is None:
        pytest.skip("poolmon._hot is not built (or POOLMON_PURE_PYTHON is set)")
    return module


def _shim_attribute_names() -> set[str]:
    """Every attribute name a shim module declares as a constant of its own."""
    names: set[str] = set()
    for module in (_psycopg_common, _redis_common, _urllib3_state):
        for value in vars(module).values():
            if isinstance(value, str) and re.fullmatch(r"_poolmon_\w+", value):
                names.add(value)
    # ... and the library attributes the shims hand the hooks as parameters.
    return names | {"_pool", "_sock", "block", "_check", "_poolmon_link"}


def test_the_compiled_source_names_no_library() -> None:
    text = SOURCE.read_text()
    for word in ("psycopg", "redis", "urllib3", "sqlalchemy", "asyncpg", "httpcore", "aiohttp"):
        assert word not in text.lower(), word
    for name in _shim_attribute_names():
        assert f'"{name}"' not in text, name


class Conn:
    #: Set only where a test gives the connection a link (declared, not assigned: the compiled
    #: hooks must still find no attribute on a connection without one).
    link: Any

    def __init__(self, pool: FakePool, cid: int) -> None:
        self.owner = pool
        self.cid = cid


class FakePool:
    """take()/give() with an idle list; ``links`` says whether connections carry links."""

    def __init__(self, hot: Any, n: int) -> None:
        self.lane = hot.Lane(time.perf_counter, BOUNDS, BOUNDS)
        self.idle: list[Conn] = []
        self.table = hot.Borrowed()  # id(conn) -> cid, for the lend table
        self.calls: list[str] = []
        self.closed = False
        for cid in range(1, n + 1):
            conn = Conn(self, cid)
            conn.link = hot.Link(self.lane, cid, key=self)
            self.table[id(conn)] = cid
            self.idle.append(conn)
        self.link = hot.Link(self.lane, key=self, items=self.idle, table=self.table)

    def take(self, timeout: Any = None) -> Conn:
        self.calls.append("take")
        if not self.idle:
            raise LookupError("empty")
        return self.idle.pop()

    def give(self, conn: Conn, flag: Any = None) -> None:
        self.calls.append("give")
        if flag != "drop":
            self.idle.append(conn)


def _recorder(log: list[tuple[Any, ...]], name: str) -> Any:
    def hook(*args: Any) -> None:
        log.append((name, *args[1:]))

    return hook


def _install(hot: Any, kind: str, method: str, **params: Any) -> tuple[Any, list[Any]]:
    log: list[tuple[Any, ...]] = []
    original = getattr(FakePool, method)

    def slow(self: Any, *args: Any) -> Any:
        log.append(("slow",))
        return original(self, *args)

    wrapper = compiled.fast_method(
        kind,
        original,
        slow,
        absorb=_recorder(log, "absorb"),
        adopt=_recorder(log, "adopt"),
        failed=_recorder(log, "failed"),
        **params,
    )
    assert isinstance(wrapper, hot.HotMethod)
    return wrapper, log


def _borrowed(pool: FakePool) -> dict[int, float]:
    copy: dict[int, float] = pool.lane.borrowed.copy()
    return copy


def test_borrow_then_release_record_on_the_lane(hot: Any) -> None:
    pool = FakePool(hot, 2)
    take, take_log = _install(hot, "BORROW", "take", conn_link="link")
    give, give_log = _install(hot, "RELEASE", "give", conn_link="link")
    conn = take(pool)
    assert list(_borrowed(pool)) == [conn.cid] and take_log == []
    assert give(pool, conn) is None
    assert _borrowed(pool) == {} and give_log == [] and pool.calls == ["take", "give"]
    waits, uses = [0] * (len(BOUNDS) + 1), [0] * (len(BOUNDS) + 1)
    pool.lane.drain(waits, uses)
    assert sum(waits) == 1 and sum(uses) == 1


def test_borrow_params_send_uncommon_calls_to_the_python_wrapper(hot: Any) -> None:
    pool = FakePool(hot, 1)
    take, log = _install(hot, "BORROW", "take", conn_link="link", unless="closed")
    pool.closed = True
    take(pool)
    assert log == [("slow",)] and _borrowed(pool) == {}
    pool2 = FakePool(hot, 1)
    take2, log2 = _install(hot, "BORROW", "take", conn_link="link", exact_type=FakePool)

    class Sub(FakePool):
        pass

    sub = Sub(hot, 1)
    take2(sub)
    take2(pool2)
    assert log2 == [("slow",)] and len(_borrowed(pool2)) == 1 and _borrowed(sub) == {}


def test_need_items_and_timed_measure_from_the_pool_link(hot: Any) -> None:
    pool = FakePool(hot, 1)
    take, log = _install(
        hot,
        "BORROW",
        "take",
        pool_link="link",
        need_items=True,
        timed=True,
        match_key=True,
        conn_link="link",
    )
    conn = take(pool)
    assert list(_borrowed(pool)) == [conn.cid] and log == []
    with pytest.raises(LookupError):
        take(pool)  # no idle connection: the Python wrapper takes the call (it might wait)
    assert log == [("slow",)]


def test_match_key_refuses_another_makers_link(hot: Any) -> None:
    pool = FakePool(hot, 1)
    pool.idle[0].link = hot.Link(pool.lane, 1, key=object())  # made by someone else
    take, log = _install(hot, "BORROW", "take", pool_link="link", conn_link="link", match_key=True)
    conn = take(pool)
    assert log == [("adopt", conn, None)] and _borrowed(pool) == {}


def test_a_closed_or_retired_lane_is_not_live(hot: Any) -> None:
    for attr in ("open", "retired"):
        pool = FakePool(hot, 1)
        setattr(pool.lane, attr, attr == "retired")
        take, log = _install(hot, "BORROW", "take", conn_link="link")
        conn = take(pool)
        assert log == [("adopt", conn, None)] and _borrowed(pool) == {}


def test_failures_go_to_failed_and_are_reraised(hot: Any) -> None:
    pool = FakePool(hot, 0)
    take, log = _install(hot, "BORROW", "take", conn_link="link")
    with pytest.raises(LookupError):
        take(pool)
    assert [entry[0] for entry in log] == ["failed"] and isinstance(log[0][-1], LookupError)


def test_release_with_owner_attr_and_answer_skips_the_original(hot: Any) -> None:
    pool = FakePool(hot, 1)
    conn = pool.take()
    pool.lane.borrow(conn.cid, 0.0, 0.0)
    give, log = _install(
        hot, "RELEASE", "give", conn_link="link", owner_attr="owner", answer="answered"
    )
    assert give(pool, conn) == "answered"
    assert pool.calls == ["take"] and log == [] and _borrowed(pool) == {}
    other = FakePool(hot, 0)
    give(other, conn)  # not this pool's connection: the Python wrapper (the original refuses)
    assert log == [("slow",)]


def test_release_defaults(hot: Any) -> None:
    pool = FakePool(hot, 2)
    give, log = _install(hot, "RELEASE", "give", conn_link="link", defaults=(None,))
    a, b = pool.take(), pool.take()
    pool.lane.borrow(a.cid, 0.0, 0.0)
    pool.lane.borrow(b.cid, 0.0, 0.0)
    give(pool, a, None)  # the default: recorded in C
    assert list(_borrowed(pool)) == [b.cid] and log == []
    give(pool, b, "drop")  # not the default: the Python wrapper
    assert log == [("slow",)] and list(_borrowed(pool)) == [b.cid]


class LendingPool(FakePool):
    """Lends and takes back in its own code, keeping what it lent in ``lent`` (key -> conn)."""

    def __init__(self, hot: Any, n: int) -> None:
        super().__init__(hot, n)
        self.lent: dict[Any, Conn] = {}

    def lend(self, key: Any) -> Conn:
        self.lent[key] = conn = self.idle.pop()
        return conn

    def take_back(self, key: Any, *, keep: bool = True) -> None:
        conn = self.lent[key]
        if keep:
            self.idle.append(conn)
        del self.lent[key]


def _lend_table(hot: Any, pool: LendingPool) -> list[tuple[str, Any]]:
    log: list[tuple[str, Any]] = []
    table = hot.LendTable(
        pool.link,
        lambda conn: log.append(("lent", conn)),
        lambda conn: log.append(("returned", conn)),
        lambda exc: log.append(("absorb", exc)),
    )
    dict.update(table, pool.lent)  # filling a table records nothing
    pool.lent = table
    return log


def test_lend_table_records_lend_and_kept_return_on_the_lane(hot: Any) -> None:
    pool = LendingPool(hot, 2)
    log = _lend_table(hot, pool)
    conn = pool.lend("a")
    assert list(_borrowed(pool)) == [conn.cid] and log == []
    assert pool.lent["a"] is conn and "a" in pool.lent and len(pool.lent) == 1
    pool.take_back("a")  # back at the idle end: kept, recorded in C
    assert _borrowed(pool) == {} and log == [] and dict(pool.lent) == {}
    waits, uses = [0] * (len(BOUNDS) + 1), [0] * (len(BOUNDS) + 1)
    pool.lane.drain(waits, uses)
    assert sum(waits) == 1 and sum(uses) == 1


def test_lend_table_hands_uncommon_writes_to_python(hot: Any) -> None:
    pool = LendingPool(hot, 2)
    log = _lend_table(hot, pool)
    conn = pool.lend("a")
    pool.take_back("a", keep=False)  # let go: the Python side decides why
    # Not recorded in C: the lane still holds it, for the Python side to release and evict.
    assert log == [("returned", conn)] and list(_borrowed(pool)) == [conn.cid]
    stranger = Conn(pool, 99)  # no entry in the pool link's table
    pool.lent["s"] = stranger
    assert log[-1] == ("lent", stranger)
    pool.lane.open = False  # a subscriber attached: every write goes to Python
    other = pool.lend("b")
    del pool.lent["b"]
    assert log[-2:] == [("lent", other), ("returned", other)]


def test_lend_table_is_a_dict_first(hot: Any) -> None:
    pool = LendingPool(hot, 1)
    log = _lend_table(hot, pool)
    with pytest.raises(KeyError):
        del pool.lent["missing"]  # raised as a dict raises it, nothing recorded
    assert log == [] and isinstance(pool.lent, dict)
    failing = hot.LendTable(
        pool.link, lambda conn: 1 / 0, lambda conn: None, lambda exc: log.append(("absorb", exc))
    )
    failing["x"] = Conn(pool, 98)  # a failing callback is absorbed, never raised
    assert failing["x"].cid == 98 and isinstance(log[0][1], ZeroDivisionError)


def test_the_type_stub_matches_the_module(hot: Any) -> None:
    """Every name poolmon/_hot.pyi declares exists on the compiled module, and every public
    name of the module is declared (so mypy --strict checks the real surface)."""
    import ast

    tree = ast.parse((SOURCE.parent / "_hot.pyi").read_text())
    declared: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
        elif isinstance(node, ast.ClassDef):
            declared.add(node.name)
            cls = getattr(hot, node.name)
            for item in node.body:
                name = (
                    item.name
                    if isinstance(item, ast.FunctionDef)
                    else item.target.id
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                    else None
                )
                if name is not None and name != "__init__":
                    assert hasattr(cls, name), f"{node.name}.{name}"
    public = {name for name in vars(hot) if not name.startswith("_")}
    assert declared == public
