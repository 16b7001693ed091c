"""Which parts of the libraries' own test suites are run with poolmon's shims on.

The one place that lists what is run and, for every upstream test left out, why. Every entry in
``deselect`` is a pytest node-id prefix (``--deselect`` matches prefixes); each must match at least
one collected test, so the list cannot silently rot when upstream renames a test.

The reasons fall in two groups, none of them poolmon's doing (the baseline run without poolmon
fails or misbehaves the same way, or the test is about something other than the pool):

* environment: this sandbox's network, no cluster/sentinel, a newer Hypercorn than urllib3's
  dummyserver was written against;
* time: slow variants of a test whose fast variant still runs (the suites must stay well under
  a minute and a half together).

SQLAlchemy's ``test/engine/test_pool.py`` and asyncpg's ``tests/test_pool.py`` run whole: no
deselections (both pass in full without poolmon here).

psycopg_pool is not here: its sdist ships no tests (checked for psycopg-pool 3.3.3; its test
suite lives only in the psycopg source repository, which this project does not fetch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "AIOHTTP",
    "ASYNCPG",
    "HTTPCORE",
    "REDIS",
    "SQLALCHEMY",
    "SUITES",
    "URLLIB3",
    "Deselect",
    "Suite",
]


@dataclass(frozen=True)
class Deselect:
    """An upstream test (node-id prefix) left out of both runs, and why."""

    prefix: str
    reason: str


@dataclass(frozen=True)
class Suite:
    """A library's own pool tests, as found in its sdist."""

    #: ``poolmon.instrument`` name of the shim under test.
    shim: str
    #: PyPI distribution whose *installed* version's sdist is fetched.
    distribution: str
    #: Paths inside the sdist to extract: the tests and their helpers, never the library's source
    #: (the installed library is the one under test, so the source must not shadow it).
    members: tuple[str, ...]
    #: Test files run (relative to the extracted sdist root).
    files: tuple[str, ...]
    deselect: tuple[Deselect, ...]
    #: Extra pytest arguments for both runs.
    args: tuple[str, ...] = ()
    #: Needs a private redis-server (its URL is passed as ``--redis-url``).
    redis_server: bool = False
    #: Upper bound on the whole run of one mode (a hang fails instead of stalling the suite).
    timeout: float = 240.0
    #: The suite's harness starts its own PostgreSQL cluster (initdb, pg_ctl), which refuses to
    #: run as root: run it as an unprivileged user (``postgres``), with a venv of the system
    #: Python (the project's interpreter may live where that user cannot read), holding the
    #: installed version of the library, pytest and pytest-timeout; poolmon from the source tree.
    unprivileged: bool = False
    #: At least this many tests must report an outcome in each run (a collection that silently
    #: shrank proves nothing).
    min_tests: int = 100


_SLOW_CONNECT_FAILURE = (
    "time: ~4 s each retrying a connect to a closed port; a single Connection, no pool"
)

REDIS: Final = Suite(
    shim="redis",
    distribution="redis",
    members=("tests", "pyproject.toml"),
    files=(
        "tests/test_connection_pool.py",
        "tests/test_max_connections_error.py",
        "tests/test_multiprocessing.py",
        "tests/test_connection.py",
        "tests/test_asyncio/test_connection_pool.py",
        "tests/test_asyncio/test_connection.py",
        "tests/test_asyncio/test_cwe_404.py",
    ),
    deselect=(
        Deselect(
            "tests/test_connection.py::test_network_connection_failure", _SLOW_CONNECT_FAILURE
        ),
        Deselect(
            "tests/test_connection.py::test_unix_socket_connection_failure", _SLOW_CONNECT_FAILURE
        ),
        Deselect(
            "tests/test_asyncio/test_connection.py::test_network_connection_failure",
            _SLOW_CONNECT_FAILURE,
        ),
        Deselect(
            "tests/test_asyncio/test_connection.py::test_unix_socket_connection_failure",
            _SLOW_CONNECT_FAILURE,
        ),
        Deselect(
            "tests/test_asyncio/test_cwe_404.py::test_cluster",
            "environment: needs a Redis Cluster on ports 16379-16384",
        ),
        *(
            Deselect(
                f"tests/test_asyncio/test_cwe_404.py::{name}[{delay}]",
                "time: 2-4 s per delay; the 0.05 s and 0.5 s delays run the same cancellation path",
            )
            for name in ("test_standalone", "test_standalone_pipeline")
            for delay in ("1", "2")
        ),
    ),
    # The redis-py suite's pyproject asks for a ``coverage`` warning filter; without coverage
    # installed pytest warns about the filter itself on every test.
    args=("-W", "ignore::pytest.PytestConfigWarning"),
    redis_server=True,
)

_TARPIT = (
    "environment: TARPIT_HOST (240.0.0.0) is reachable through this sandbox's network, so "
    "connect timeouts do not happen and the connected sockets leak into later tests as "
    "ResourceWarnings (errors under urllib3's filterwarnings=error)"
)
_HYPERCORN_TLS = (
    "environment: dummyserver's /certificate and /alpn_protocol read scope['extensions']['tls'], "
    "which the installed Hypercorn does not provide (HTTP 500 without poolmon too)"
)
_TLS_CLASSES = ("TestHTTPS_TLSv1_2", "TestHTTPS_TLSv1_3")
_HTTPS = "test/with_dummyserver/test_https.py"

URLLIB3: Final = Suite(
    shim="urllib3",
    distribution="urllib3",
    members=("test", "dummyserver", "pyproject.toml"),
    files=(
        "test/test_connectionpool.py",
        "test/test_poolmanager.py",
        "test/test_proxymanager.py",
        "test/with_dummyserver/test_connectionpool.py",
        "test/with_dummyserver/test_poolmanager.py",
        "test/with_dummyserver/test_socketlevel.py",
        _HTTPS,
    ),
    deselect=(
        Deselect(
            "test/with_dummyserver/test_connectionpool.py::TestConnectionPoolTimeouts::"
            "test_connect_timeout",
            _TARPIT,
        ),
        Deselect(
            "test/with_dummyserver/test_connectionpool.py::TestConnectionPoolTimeouts::"
            "test_total_applies_connect",
            _TARPIT,
        ),
        Deselect(
            "test/with_dummyserver/test_connectionpool.py::TestConnectionPoolTimeouts::"
            "test_create_connection_timeout",
            _TARPIT,
        ),
        Deselect(
            "test/with_dummyserver/test_connectionpool.py::TestConnectionPool::"
            "test_source_address_error[invalid_source_address0-False]",
            "environment: binding to 192.0.2.255 succeeds in this sandbox (no NewConnectionError)",
        ),
        *(
            Deselect(f"{_HTTPS}::{cls}::{name}", _TARPIT)
            for cls in _TLS_CLASSES
            for name in (
                "test_https_timeout",
                "test_enhanced_timeout",
                "test_http2_probe_no_result_in_connect_error",
                "test_http2_probe_blocked_per_thread",
            )
        ),
        *(
            Deselect(f"{_HTTPS}::{cls}::{name}", _HYPERCORN_TLS)
            for cls in _TLS_CLASSES
            for name in (
                "test_client_intermediate",
                "test_client_key_password",
                "test_alpn_default",
                "test_http2_probe_result_is_cached",
            )
        ),
    ),
    # pytest-asyncio (installed for redis-py's suite) is not one of urllib3's test dependencies;
    # its configuration warning would be an error under urllib3's filterwarnings=error.
    # A socket some earlier test leaked is reported as an "unraisable" ResourceWarning in
    # whichever test the garbage collector happens to run in: under filterwarnings=error that
    # fails a random test, in the baseline as well as with poolmon (seen once in each mode), so
    # it says nothing about poolmon. Both runs ignore it alike.
    args=(
        "-p",
        "no:asyncio",
        "-W",
        "ignore::pytest.PytestUnraisableExceptionWarning",
    ),
)

SQLALCHEMY: Final = Suite(
    shim="sqlalchemy",
    distribution="sqlalchemy",
    # The test tree, its configuration, and the test plugin SQLAlchemy's conftest loads by path
    # (lib/sqlalchemy/testing/plugin). That directory has no __init__.py above it, so the
    # conftest's ``sys.path.insert(0, "lib")`` cannot shadow the installed, regular package.
    members=("test", "setup.cfg", "pyproject.toml", "lib/sqlalchemy/testing/plugin"),
    files=("test/engine/test_pool.py",),
    deselect=(),
)

ASYNCPG: Final = Suite(
    shim="asyncpg",
    distribution="asyncpg",
    # asyncpg's harness (asyncpg._testbase, shipped in the installed package) starts a private
    # PostgreSQL cluster from the server binaries (PGINSTALLATION) for these tests.
    members=("tests", "pyproject.toml", "setup.cfg"),
    files=("tests/test_pool.py",),
    deselect=(),
    timeout=420.0,
    unprivileged=True,
    min_tests=60,  # 66 tests (and 45 subtests) in asyncpg 0.32.0
)

HTTPCORE: Final = Suite(
    shim="httpx",
    distribution="httpcore",
    members=("tests", "pyproject.toml"),
    files=("tests/_async/test_connection_pool.py", "tests/_sync/test_connection_pool.py"),
    deselect=(),
    min_tests=50,  # 51 in httpcore 1.0.9: its pool tests are few and exact
    # httpcore's async tests run on asyncio and trio through anyio's pytest plugin (installed);
    # pytest-asyncio (installed for redis-py's suite) is not one of httpcore's test dependencies
    # and its configuration warning would be an error under httpcore's filterwarnings=error.
    args=("-p", "no:asyncio"),
)

AIOHTTP: Final = Suite(
    shim="aiohttp",
    distribution="aiohttp",
    members=("tests", "pytest.ini", "pyproject.toml"),
    files=("tests/test_connector.py",),
    deselect=(),
    # aiohttp's pytest.ini asks for xdist (--numprocesses), coverage and doctest collection of
    # the tree: none of that is about the connector, and the plugins are not test dependencies
    # of poolmon. Both runs override addopts alike; the rest of the ini (filterwarnings=error,
    # xfail_strict, markers) stays in force. pytest-asyncio is left out as for httpcore: aiohttp
    # uses its own pytest plugin.
    args=(
        "-o",
        "addopts=--strict-markers -m 'not dev_mode and not autobahn and not internal'",
        "-p",
        "no:asyncio",
    ),
)

#: Every suite, in the order the tests run them.
SUITES: Final = (REDIS, URLLIB3, SQLALCHEMY, ASYNCPG, HTTPCORE, AIOHTTP)
