"""Paths another local user or a crafted store could redirect: the embedded Redis socket's folder (issue 30)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from worker.connection import (
    QueueUnavailable,
    embedded_socket,
    ensure_embedded_redis,
    redis_connection,
    stop_embedded_redis,
)


def mode_and_owner(folder: Path) -> tuple[int, int]:
    info = folder.lstat()
    return stat.S_IMODE(info.st_mode), info.st_uid


def test_a_long_lamp_home_puts_the_socket_in_a_private_folder_never_a_bare_tmp_path(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / ("h" * 120)))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    socket = embedded_socket()
    assert socket.parent.parent == Path(tempfile.gettempdir()) and socket.parent.name.startswith(
        f"lamp-redis-{os.getuid()}-")
    assert mode_and_owner(socket.parent) == (0o700, os.getuid())
    try:
        assert ensure_embedded_redis() == socket and redis_connection(f"unix://{socket}").ping()
    finally:
        assert stop_embedded_redis()
        socket.parent.rmdir()


def test_a_socket_folder_someone_else_put_there_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / ("h" * 120)))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    folder = embedded_socket().parent
    folder.rmdir()
    (tmp_path / "theirs").mkdir()
    folder.symlink_to(tmp_path / "theirs")  # as a squatter would, with their own Redis listening inside
    with pytest.raises(QueueUnavailable) as refused:
        embedded_socket()
    assert str(refused.value) == (f"embedded Redis: {folder} is not a folder of this user (uid {os.getuid()}); "
                                  "remove it, or set REDIS_URL")


def test_an_open_redis_folder_under_lamp_home_is_made_private(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "redis").mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / "home" / "redis", 0o777)
    assert embedded_socket() == tmp_path / "home" / "redis" / "redis.sock"
    assert mode_and_owner(tmp_path / "home" / "redis") == (0o700, os.getuid())
