"""Shared fixtures: a private LAMP_HOME, a private Redis database and a fresh PostgreSQL schema per test.

The real services run on these machines (`.ci/run` starts them): Redis on 127.0.0.1:6379 and PostgreSQL on
127.0.0.1:5432, database `test`. Several test sessions may run at once, so each session claims its own Redis
database number, and each PostgreSQL test gets a schema of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_URL = os.environ.get("LAMP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()


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
def redis_db() -> Iterator[int]:
    """A Redis database number (1-15) claimed by this test session alone, released at its end."""
    admin = redis.Redis(REDIS_HOST, REDIS_PORT, db=0)
    try:
        admin.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on {REDIS_HOST}:{REDIS_PORT} is not reachable ({exc}); start it (see .ci/run)")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    for number in range(15, 0, -1):
        if admin.set(f"lamp-tests:db-claim:{number}", token, nx=True, ex=3600):
            yield number
            if admin.get(f"lamp-tests:db-claim:{number}") == token.encode():
                admin.delete(f"lamp-tests:db-claim:{number}")
            return
    pytest.fail("every Redis database 1-15 is claimed by other test sessions; wait or clear lamp-tests:* keys")


@pytest.fixture
def redis_url(redis_db: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """REDIS_URL pointing at this session's database, flushed before and after the test."""
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    monkeypatch.setenv("REDIS_URL", url)
    yield url
    connection.flushdb()


@pytest.fixture
def postgres_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """DATABASE_URL for a fresh, empty PostgreSQL schema (dropped afterwards)."""
    from sqlalchemy import create_engine, text

    from store.db import dispose

    schema = f"lamp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # any failure to connect means the service is missing
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable ({exc}); start it (see .ci/run)")
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
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
