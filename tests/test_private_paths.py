"""Paths another local user or a crafted store could redirect (issue 30): the embedded Redis socket's folder, an
upload reference that becomes a path on a worker, and a stored run file's name written into a run folder."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import update

from lamp_common.errors import LampError
from lamp_engine.config import RunConfig
from store.db import session_scope
from store.files import fetch_upload, materialise_run, store_run_folder, store_upload
from store.models import RunFile
from tests.test_store_files import new_run
from worker import queue
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


def test_an_upload_reference_is_refused_unless_it_has_the_exact_form(database_url, tmp_path):
    with session_scope() as session:
        sha256 = store_upload(session, b"text,label\na film,1\n", "data.csv")[7:71]
    crafted = f"upload:{sha256}/../../outside.csv"  # the stored bytes, written wherever the suffix points
    with session_scope() as session, pytest.raises(LampError) as refused:
        fetch_upload(session, crafted, tmp_path / "cache" / "uploads")
    assert str(refused.value) == (f"train_file: {crafted!r} is not an upload reference (upload:<64 hex digits> and "
                                  "one of .csv, .tsv, .jsonl, .json); upload the file again")
    assert not (tmp_path / "outside.csv").exists() and not (tmp_path / "cache" / "outside.csv").exists()


def test_a_run_with_a_crafted_upload_reference_is_not_queued(database_url, redis_url):
    config = RunConfig.from_flat({"model": "tiny-t5", "task": "custom", "train_file": "upload:../../etc/passwd.csv",
                                  "text_column": "text", "label_column": "label"})
    with pytest.raises(LampError, match="is not an upload reference"):
        queue.submit_run(config)
    assert queue.get_queue().count == 0


def test_a_stored_file_name_leading_outside_the_run_folder_is_not_written(database_url, tmp_path):
    run_id = new_run()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text("{}")
    (tmp_path / "run" / "notes.txt").write_text("escape")
    store_run_folder(run_id, tmp_path / "run")
    with session_scope() as session:
        session.execute(update(RunFile).where(RunFile.name == "notes.txt").values(name="../escaped.txt"))
    problems = materialise_run(run_id, tmp_path / "cache")
    assert problems == [f"run {run_id}: refused the stored file name '../escaped.txt', which leads outside its "
                        "folder; delete the run"]
    assert not (tmp_path / "escaped.txt").exists() and (tmp_path / "cache" / "result.json").read_text() == "{}"
