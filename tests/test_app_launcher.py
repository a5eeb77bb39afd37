"""`lamp up`: refuses bad set-ups in one line (exit 2), and starts and stops the whole stack for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from private_servers import free_port
from redis import Redis

from app import launcher

ROOT = Path(__file__).resolve().parents[1]


def test_port_in_use_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert launcher.main(["up", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lamp up: port: 127.0.0.1:{port} is not free") and err.count("\n") == 1


def test_bad_database_url_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "nonsense://")
    assert launcher.main(["up", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lamp up: DATABASE_URL: ") and err.count("\n") == 1


def test_unreachable_redis_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'lamp.db'}")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert launcher.main(["up", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lamp up: REDIS_URL: cannot reach Redis at redis://127.0.0.1:1/0") and err.count("\n") == 1


PAGE = """
import os, pathlib, time
pathlib.Path(os.environ["LAMP_TEST_MARK"]).write_text("ran")
time.sleep(float(os.environ["LAMP_TEST_PAGE_SECONDS"]))
"""


@pytest.mark.timeout(90)
def test_the_first_page_is_drawn_by_a_session_of_our_own_and_a_slow_one_is_reported_not_raised(tmp_path):
    """draw_first_page runs the app's script for real (the page leaves its mark); a page slower than the timeout
    and a dashboard that does not answer come back as a reason, so `lamp up` serves on."""
    page, mark = tmp_path / "page.py", tmp_path / "mark"
    page.write_text(PAGE)
    port = free_port()
    env = {**os.environ, "LAMP_TEST_MARK": str(mark), "LAMP_TEST_PAGE_SECONDS": "3"}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(page), "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true",
                               "--browser.gatherUsageStats", "false"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        assert launcher.wait_healthy(url, server) and not mark.exists()
        assert launcher.draw_first_page(url, timeout_s=1).startswith("TimeoutError")
        assert mark.read_text() == "ran"
        mark.unlink()
        started = time.monotonic()
        assert launcher.draw_first_page(url) is None
        assert mark.read_text() == "ran" and time.monotonic() - started >= 3  # it waited for the page's end
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert launcher.draw_first_page(url, timeout_s=5).startswith("ConnectionRefusedError")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_up_starts_embedded_redis_a_worker_and_the_dashboard_and_stops_them(tmp_path):
    """No REDIS_URL and no DATABASE_URL: everything lives under LAMP_HOME; SIGTERM stops all of it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["LAMP_HOME"] = str(tmp_path / "home")
    log = tmp_path / "up.log"  # a file, not a pipe: the children log there too and must never block on it
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "lamp_cli", "up", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    redis = Redis(unix_socket_path=str(tmp_path / "home" / "redis" / "redis.sock"))
    try:
        wanted = f"LAMP Studio is up: http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while wanted not in log.read_text() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert wanted in log.read_text(), log.read_text()
        assert "could not be drawn" not in log.read_text()  # its first page was drawn before the address showed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as response:
            assert response.read() == b"ok"
        deadline = time.monotonic() + 30
        while not redis.smembers("rq:workers") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len(redis.smembers("rq:workers")) == 1
        assert (tmp_path / "home" / "lamp.db").is_file()
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=40) == 0
        assert not _answers(redis)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)  # the test failed: take the children down with it
        if _answers(redis):
            redis.shutdown(nosave=True)
    launcher.check_port("127.0.0.1", port)  # the dashboard released its port


def _answers(redis: Redis) -> bool:
    try:
        return bool(redis.ping())
    except Exception:  # noqa: BLE001 - any failure means the server is gone
        return False


def _start_up(home: Path, port: int, log: Path) -> subprocess.Popen:
    """`lamp up` on the embedded Redis and SQLite under `home`, waited for until it says it is up."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["LAMP_HOME"] = str(home)
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "lamp_cli", "up", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while "LAMP Studio is up" not in log.read_text() and up.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    assert "LAMP Studio is up" in log.read_text(), log.read_text()
    return up


def _wait_gone(pids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if psutil.pid_exists(p)]}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_lamp_up_leaves_only_its_redis_which_the_next_one_adopts_and_a_double_ctrl_c_stops(tmp_path):
    """SIGKILL: the worker and the dashboard die with `lamp up`, its embedded Redis stays; the next `lamp up`
    adopts that Redis, and Ctrl-C pressed twice stops everything, Redis included."""
    home = tmp_path / "home"
    redis = Redis(unix_socket_path=str(home / "redis" / "redis.sock"))
    first = _start_up(home, free_port(), tmp_path / "first.log")
    second = None
    try:
        children = [child.pid for child in psutil.Process(first.pid).children()]
        server_pid = redis.info("server")["process_id"]
        assert len(children) == 2
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        _wait_gone(children)  # nothing of it is left running...
        assert redis.info("server")["process_id"] == server_pid  # ...but the embedded Redis
        second = _start_up(home, free_port(), tmp_path / "second.log")
        children = [child.pid for child in psutil.Process(second.pid).children()]
        assert redis.info("server")["process_id"] == server_pid  # adopted, not started again
        second.send_signal(signal.SIGINT)
        time.sleep(0.5)
        second.send_signal(signal.SIGINT)  # impatient: the clean-up must still stop Redis
        assert second.wait(timeout=40) == 0, (tmp_path / "second.log").read_text()
        _wait_gone([*children, server_pid])
        assert not _answers(redis)
    finally:
        for up in (first, second):
            if up is not None and up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
        if _answers(redis):
            redis.shutdown(nosave=True)
