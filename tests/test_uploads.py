"""Uploads (issue 30): a size limit before the bytes are read, parsed once and stored once, on Launch, and the
dashboard's Streamlit started with that limit and without its developer toolbar."""

from __future__ import annotations

import sys

from streamlit import config as streamlit_config
from streamlit.testing.v1 import AppTest

from app import launcher
from app.forms import upload_refusal
from store.settings import MB


def test_an_upload_over_the_limit_is_refused_from_its_size(monkeypatch):
    monkeypatch.setenv("LAMP_MAX_UPLOAD_MB", "2")
    assert upload_refusal("big.csv", 2 * MB) is None
    assert upload_refusal("big.csv", 3 * MB) == ("train_file: big.csv has 3.0 MB, over the upload limit of 2 MB; "
                                                 "upload a smaller file (LAMP_MAX_UPLOAD_MB sets the limit)")
    monkeypatch.delenv("LAMP_MAX_UPLOAD_MB")
    assert upload_refusal("big.csv", 100 * MB) is None and upload_refusal("big.csv", 101 * MB) is not None


def test_lamp_up_starts_streamlit_with_the_upload_limit_and_no_developer_toolbar(monkeypatch):
    monkeypatch.setenv("LAMP_MAX_UPLOAD_MB", "7")
    command = launcher.streamlit_command("127.0.0.1", 8501)
    assert command[:4] == [sys.executable, "-m", "app.serve", "run"]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--client.toolbarMode"] == "viewer" and options["--server.maxUploadSize"] == "7"
    for name in options:
        streamlit_config.get_option(name.removeprefix("--"))  # each is an option this Streamlit knows


def parse_twice() -> None:
    """An AppTest script: the launch page's reader given the same upload on two reruns."""
    import pandas as pd
    import streamlit as st
    from sqlalchemy import func, select

    from app.views import launch
    from store.db import session_scope
    from store.models import Upload

    calls = st.session_state.setdefault("calls", {"parse": 0})
    real = pd.read_csv

    def counted(*args, **kwargs):
        calls["parse"] += 1
        return real(*args, **kwargs)

    launch.pd.read_csv = counted

    class Picked:
        name, size = "my data.csv", 20

        def getvalue(self) -> bytes:
            return b"text,label\na film,1\n"

    path, frame = launch.read_upload(Picked())
    with session_scope() as session:
        stored = session.scalar(select(func.count()).select_from(Upload))
    st.write(f"{path.rsplit('/', 1)[1]} {len(frame)} parsed {calls['parse']} stored {stored}")


def test_an_upload_is_parsed_once_however_often_the_page_reruns_and_stored_only_on_launch(lamp_home):
    app = AppTest.from_function(parse_twice, default_timeout=60).run()
    assert app.markdown[0].value == "my_data.csv 1 parsed 1 stored 0"
    app.run()
    assert app.markdown[0].value == "my_data.csv 1 parsed 1 stored 0"


def test_launch_stores_a_picked_file_once_for_a_sweep_and_a_file_never_launched_goes(database_url, redis_url):
    import os
    import time

    from sqlalchemy import select

    from app import backend
    from app.forms import LaunchRequest
    from store.db import session_scope
    from store.models import Run, Upload

    content = b"text,label\na warm film,1\na dull film,0\n"
    picked = backend.keep_pending_upload(content, "reviews.csv")
    request = LaunchRequest(values={"model": "tiny-t5", "task": "custom", "train_file": str(picked), "steps": 2},
                            grid={"seed": [1, 2]})
    run_ids = backend.submit(request, "two seeds")
    with session_scope() as session:
        uploads = session.scalars(select(Upload)).all()
        named = {session.get(Run, run_id).config["data"]["train_file"] for run_id in run_ids}
    assert [(u.name, u.size) for u in uploads] == [("reviews.csv", len(content))]
    assert named == {f"upload:{uploads[0].sha256}.csv"}  # both runs name the one stored copy, not a host's path

    never = backend.keep_pending_upload(b"text,label\nnever launched,1\n", "other.csv")
    day_ago = time.time() - backend.PENDING_UPLOAD_S - 60
    os.utime(never.parent, (day_ago, day_ago))
    again = backend.keep_pending_upload(content, "reviews.csv")  # picking a file tidies the stale ones
    assert again == picked and again.is_file() and not never.parent.exists()


def test_an_upload_goes_with_the_last_run_that_names_it(database_url, redis_url, tmp_path):
    from sqlalchemy import func, select, update

    from lamp_engine.config import RunConfig
    from store.accounts import Actor
    from store.db import session_scope
    from store.models import Blob, Run, Upload
    from worker import queue

    (tmp_path / "reviews.csv").write_text("text,label\na warm film,1\na dull film,0\n")
    config = RunConfig.from_flat({"model": "tiny-t5", "task": "custom", "train_file": str(tmp_path / "reviews.csv")})
    first, second = queue.submit_run(config), queue.submit_run(config)

    def stored() -> tuple[int, int]:
        with session_scope() as session:
            return (session.scalar(select(func.count()).select_from(Upload)),
                    session.scalar(select(func.count()).select_from(Blob)))

    with session_scope() as session:
        session.execute(update(Run).values(status="failed"))
    assert stored() == (1, 1)  # both runs name the one stored copy
    queue.delete_run(first, Actor("tester", admin=True))
    assert stored() == (1, 1)  # the second run still trains on it
    queue.delete_run(second, Actor("tester", admin=True))
    assert stored() == (0, 0)
