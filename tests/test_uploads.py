"""Uploads (issue 30): a size limit before the bytes are read, parsed and stored once per content, and the
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
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--client.toolbarMode"] == "viewer" and options["--server.maxUploadSize"] == "7"
    for name in options:
        streamlit_config.get_option(name.removeprefix("--"))  # each is an option this Streamlit knows


def parse_twice() -> None:
    """An AppTest script: the launch page's reader given the same upload on two reruns."""
    import pandas as pd
    import streamlit as st

    from app import backend
    from app.views import launch

    calls = st.session_state.setdefault("calls", {"parse": 0, "store": 0})

    def counted(name, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        return wrapper

    launch.pd.read_csv = counted("parse", pd.read_csv)
    backend.store_upload_file = counted("store", lambda data, name: f"upload:{len(data)}.csv")

    class Upload:
        name, size = "data.csv", 20

        def getvalue(self) -> bytes:
            return b"text,label\na film,1\n"

    reference, frame = launch.read_upload(Upload())
    st.write(f"{reference} {len(frame)} {calls['parse']} {calls['store']}")


def test_an_upload_is_parsed_and_stored_once_however_often_the_page_reruns(lamp_home):
    app = AppTest.from_function(parse_twice, default_timeout=60).run()
    assert app.markdown[0].value == "upload:20.csv 1 1 1"
    app.run()
    assert app.markdown[0].value == "upload:20.csv 1 1 1"


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
