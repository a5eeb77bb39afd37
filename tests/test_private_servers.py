"""The test session's own Redis and PostgreSQL (conftest.py, private_servers.py): started with nothing configured,
real servers, and gone with their folder when the session ends, however it ends: Ctrl-C (SIGINT), SIGTERM, or
SIGKILL, which leaves the session no time at all (the reaper process cleans up then). With LAMP_TEST_REDIS_URL
and LAMP_TEST_POSTGRES_URL set, a session uses those servers and starts none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from private_servers import SKIP_WITH_EXISTING, ServerGroup, existing_servers_named, running
from sqlalchemy import create_engine, text

TESTS = Path(__file__).resolve().parent
needs_private = pytest.mark.skipif(existing_servers_named(), reason=SKIP_WITH_EXISTING)
# A session that gets its servers, says where they are, and waits to be interrupted.
WAITING_TEST = '''
import json, os, time
from pathlib import Path

def test_wait(redis_url, postgres_url, server_group):
    pids = [int(record.read_text().split()[0]) for record in server_group.folder.glob("*/server.pid")]
    Path(os.environ["READY_FILE"]).write_text(json.dumps({"folder": str(server_group.folder), "pids": pids,
                                                          "redis": redis_url, "postgres": postgres_url}))
    time.sleep(120)
'''

# A session given existing servers: it uses them, and starts no server of its own.
NAMED_TEST = '''
import os
from urllib.parse import urlsplit

import psutil

def test_named(redis_url, postgres_url, request):
    assert "server_group" not in request.fixturenames
    assert urlsplit(redis_url).netloc == urlsplit(os.environ["LAMP_TEST_REDIS_URL"]).netloc
    assert urlsplit(postgres_url).netloc == urlsplit(os.environ["LAMP_TEST_POSTGRES_URL"]).netloc
    assert psutil.Process().children(recursive=True) == []
'''


def child_session(folder: Path, test: str, **env: str) -> subprocess.Popen:
    """A pytest session on one test file written into `folder`, with this repository's conftest."""
    (folder / "test_child.py").write_text(test)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("LAMP_TEST_", "PYTEST_"))}
    environment |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])), **env}
    return subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                             "--rootdir", str(folder), "test_child.py"], cwd=folder, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_session_given_existing_servers_uses_them_and_starts_none(tmp_path, redis_server, postgres_server):
    session = child_session(tmp_path, NAMED_TEST, LAMP_TEST_REDIS_URL=redis_server,
                            LAMP_TEST_POSTGRES_URL=postgres_server)
    output = session.communicate(timeout=120)[0]
    assert session.returncode == 0, output


@needs_private
def test_the_private_servers_are_real_and_answer_on_loopback():
    with ServerGroup() as group:
        postgres, server = group.postgres(), group.redis()
        assert postgres.url.startswith("postgresql+psycopg://postgres@127.0.0.1:") and postgres.port not in (0, 5432)
        assert server.url.startswith("redis://127.0.0.1:") and server.port not in (0, 6379)
        engine = create_engine(postgres.url)
        with engine.connect() as connection:
            assert connection.scalar(text("SHOW server_version")).startswith("16.")
        engine.dispose()
        with redis.Redis.from_url(server.url) as client:
            assert client.info("server")["redis_version"].startswith(("6.", "7."))
        folder = group.folder
    assert not folder.exists()


@pytest.mark.slow
@needs_private
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "term", "kill"])
def test_an_interrupted_session_leaves_no_server_and_no_folder(tmp_path, how):
    ready = tmp_path / "ready.json"
    session = child_session(tmp_path, WAITING_TEST, READY_FILE=str(ready))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert session.poll() is None, session.stdout.read()
            assert time.monotonic() < deadline, "the session did not start its servers in time"
            time.sleep(0.1)
        time.sleep(0.2)  # the file is complete
        started = json.loads(ready.read_text())
        folder, pids = Path(started["folder"]), started["pids"]
        assert len(pids) == 2 and all(running(pid) for pid in pids) and folder.is_dir()
        assert ":6379" not in started["redis"] and ":5432" not in started["postgres"]
        os.kill(session.pid, how)  # to pytest alone, as Ctrl-C reaches it under `make`
        output = session.communicate(timeout=90)[0]
    finally:
        if session.poll() is None:
            os.killpg(session.pid, signal.SIGKILL)
            session.wait()
    if how != signal.SIGKILL:
        assert session.returncode == 2, output  # pytest's "interrupted"
    deadline = time.monotonic() + 60  # after SIGKILL the reaper cleans up on its own time
    while (any(running(pid) for pid in pids) or folder.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if running(pid)], f"servers still running; the session printed:\n{output}"
    assert not folder.exists(), f"{folder} is left; the session printed:\n{output}"
