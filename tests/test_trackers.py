"""Runs mirrored to MLflow and Weights & Biases (issue 32), against the real things: a local `mlflow server` (SQLite
backend, local artifact folder, a free loopback port) started once for the module, and wandb in offline mode.

A tiny run goes through the worker's job function and is read back with MlflowClient (params, tags, metric histories
at their steps, artifacts); its `peft/` downloaded from MLflow loads with PeftModel.from_pretrained and gives the
engine's logits; the run's page links to it. The server is stopped (SIGSTOP) while a run trains: the run succeeds,
and after the server is back the worker's catch-up completes the mirror with every point once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import CHROMIUM, launch_browser, settle, streamlit_app
from private_servers import free_port
from test_train import rebuild

from lamp_engine.config import RunConfig
from lamp_engine.trackers.core import TrackerKind
from store.db import session_scope
from store.mirrors import mirror_status
from store.models import MetricPoint, Run, TrackerMirror
from store.queries import get_run
from worker import queue
from worker.cli import main as worker_cli
from worker.jobs import run_training
from worker.trackers import catch_up

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
TINY = {"model": "tiny-t5", "task": "sst2", "data_dir": str(DATA), "method": "lamp", "length": 8, "rank": 2,
        "pool": 2, "steps": 4, "batch_size": 4, "max_eval_examples": 8, "eval_every": 2}
COSTS = ("trainable_params", "prompt_tokens", "peak_memory_mb", "step_seconds_median", "train_seconds")

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is missing")


class MlflowServer:
    """`mlflow server` in its own process group (it serves through a uvicorn child), stopped with the module."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "mlflow.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"], env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, Path(self.log.name).read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server at {self.url} never answered")

    def signal(self, number: int) -> None:
        os.killpg(self.process.pid, number)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mirrored_store(mlflow_server, lamp_home, redis_url, monkeypatch, tmp_path) -> MlflowServer:
    """A private store and queue, runs mirrored to the module's MLflow server in their own experiment."""
    monkeypatch.setenv("LAMP_MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("LAMP_MLFLOW_EXPERIMENT", f"test-{tmp_path.name}")
    monkeypatch.delenv("LAMP_WANDB_PROJECT", raising=False)
    return mlflow_server


def client(server: MlflowServer):
    from mlflow import MlflowClient

    return MlflowClient(server.url)


def stored_points(run_id: int) -> dict[str, list[tuple[int, float]]]:
    with session_scope() as session:
        rows = session.execute(MetricPoint.__table__.select().where(MetricPoint.run_id == run_id)).all()
    series: dict[str, list[tuple[int, float]]] = {}
    for row in sorted(rows, key=lambda row: row.id):
        series.setdefault(row.key, []).append((row.step, row.value))
    return series


def mirrored_points(mlflow, remote_id: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    return {key: sorted((metric.step, metric.value) for metric in mlflow.get_metric_history(remote_id, key))
            for key in keys}


def mirror_row(run_id: int) -> TrackerMirror:
    with session_scope() as session:
        row = session.query(TrackerMirror).filter_by(run_id=run_id, tracker="mlflow").one()
        session.expunge(row)
        return row


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_worker_run_reads_back_whole_from_mlflow_and_its_page_links_there(mirrored_store, tmp_path):
    from mlflow.artifacts import download_artifacts
    from peft import PeftModel

    config = RunConfig.from_flat(TINY)
    run_id = queue.submit_run(config, submitted_by="ada")
    assert run_training(run_id)["status"] == "succeeded"
    with session_scope() as session:
        run = get_run(session, run_id).to_dict()
        status = mirror_status(session, run_id)
    mirror = mirror_row(run_id)
    assert status == [{"tracker": "mlflow", "url": mirror.url, "error": None, "points_behind": 0, "up_to_date": True}]
    mlflow = client(mirrored_store)
    remote = mlflow.get_run(mirror.remote_id)
    assert mirror.url == f"{mirrored_store.url}/#/experiments/{remote.info.experiment_id}/runs/{mirror.remote_id}"
    assert remote.info.status == "FINISHED"
    assert remote.data.params == {key: str(value) for key, value in config.flat().items()}
    assert {key: value for key, value in remote.data.tags.items() if not key.startswith(("mlflow.", "lamp_m"))} == {
        "method": "lamp", "model": "tiny-t5", "task": "sst2", "backbone_family": "seq2seq", "submitted_by": "ada",
        "lamp_run_id": str(run_id)}
    ours = stored_points(run_id)
    assert set(ours) == {"loss", "lr", "eval_accuracy", "eval_train_seconds"}
    assert [step for step, _ in ours["loss"]] == [1, 2, 3, 4] and [step for step, _ in ours["eval_accuracy"]] == [2, 4]
    theirs = mirrored_points(mlflow, mirror.remote_id, list(ours))
    assert theirs == {key: sorted(values) for key, values in ours.items()}
    for name in COSTS:
        assert remote.data.metrics[name] == pytest.approx(run[name])
    assert remote.data.metrics["test_accuracy"] == pytest.approx(run["metrics"]["accuracy"])
    artifacts = {item.path for item in mlflow.list_artifacts(mirror.remote_id)}
    assert {"peft", "prompt.safetensors", "result.json"} <= artifacts and "trainer_state.pt" not in artifacts

    peft_folder = download_artifacts(run_id=mirror.remote_id, artifact_path="peft", dst_path=str(tmp_path / "dl"),
                                     tracking_uri=mirrored_store.url)
    compare_logits(config, Path(run["artifact_dir"]), Path(peft_folder), PeftModel)
    page_links_to(mirror.url, run_id, tmp_path)


def compare_logits(config: RunConfig, artifact_dir: Path, peft_folder: Path, peft_model) -> None:
    """The adapter from MLflow gives the engine's own logits for the run's prompt (as tests/test_train.py)."""
    import torch

    from lamp_engine.backbones import load_backbone
    from store.db import lamp_home

    backbone = load_backbone("tiny-t5", config.train)
    prompt, _ = rebuild(lamp_home() / artifact_dir, config, 64)
    ids = backbone.tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    decoder = torch.tensor([[0, 5, 6], [0, 7, 8]])
    with torch.no_grad():
        ours = backbone.logits(prompt, ids.input_ids, ids.attention_mask, decoder_input_ids=decoder)
        theirs = peft_model.from_pretrained(load_backbone("tiny-t5", config.train).model, peft_folder)(
            input_ids=ids.input_ids, attention_mask=ids.attention_mask, decoder_input_ids=decoder).logits
    torch.testing.assert_close(ours, theirs)


def page_links_to(url: str, run_id: int, tmp_path: Path) -> None:
    """The run's page in a real browser: a link to the MLflow run, and the mirror up to date."""
    if not Path(CHROMIUM).exists():
        return  # the browser half needs Debian's chromium (`apt-get install chromium`); the rest was checked
    from playwright.sync_api import sync_playwright

    with open(tmp_path / "dashboard.log", "w") as log, streamlit_app(dict(os.environ), log) as address, \
            sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{address}/run?id={run_id}")
        settle(page)
        link = page.get_by_role("link", name="open in MLflow")
        assert link.get_attribute("href") == url
        assert page.get_by_text("MLflow: ✓ up to date").is_visible()
        browser.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_tracker_stopped_mid_run_harms_nothing_and_gets_every_point_once_when_back(mirrored_store, monkeypatch,
                                                                                    capsys):
    monkeypatch.setenv("LAMP_TRACKER_GRACE_S", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    run_id = queue.submit_run(RunConfig.from_flat({**TINY, "steps": 300, "eval_every": 100}))  # past SEND_EVERY_S
    outcome: dict = {}
    training = threading.Thread(target=lambda: outcome.update(run_training(run_id)))
    training.start()
    try:
        deadline = time.monotonic() + 120
        while not _sent(run_id):
            assert time.monotonic() < deadline and training.is_alive(), "the mirror never sent a point"
            time.sleep(0.1)
        mirrored_store.signal(signal.SIGSTOP)  # the tracker stops answering, mid-run
        assert training.is_alive(), "the run ended before the tracker stopped: make it longer"
        training.join(timeout=200)
        assert outcome == {"run_id": run_id, "status": "succeeded"}
        stopped = mirror_row(run_id)
        assert not stopped.finished, "the mirror cannot have finished with the server stopped"
    finally:
        mirrored_store.signal(signal.SIGCONT)  # back: requests it had queued are answered now, too late
        training.join(timeout=200)
    with session_scope() as session:
        assert session.get(Run, run_id).status == "succeeded"
        behind = mirror_status(session, run_id)[0]
        assert not behind["up_to_date"]
    assert catch_up() == [run_id]  # what a worker's maintenance does every minute
    mirror = mirror_row(run_id)
    assert mirror.finished and mirror.error is None
    ours = stored_points(run_id)
    assert [step for step, _ in ours["loss"]] == list(range(1, 301))
    theirs = mirrored_points(client(mirrored_store), mirror.remote_id, list(ours))
    assert theirs == {key: sorted(values) for key, values in ours.items()}  # none lost, none twice
    assert client(mirrored_store).get_run(mirror.remote_id).info.status == "FINISHED"
    with session_scope() as session:  # every answer lost: the whole run is sent again, and stored once
        session.query(TrackerMirror).filter_by(run_id=run_id).update({"sent_seq": 0, "finished": False})
    assert worker_cli(["sync-trackers", str(run_id)]) == 0
    assert capsys.readouterr().out == f"mlflow: up to date {mirror.url}\n"
    assert mirrored_points(client(mirrored_store), mirror.remote_id, list(ours)) == theirs


def _sent(run_id: int) -> int:
    with session_scope() as session:
        return session.query(TrackerMirror.sent_seq).filter_by(run_id=run_id).scalar() or 0


@pytest.mark.slow
def test_wandb_offline_writes_a_run_that_wandbs_records_read_back(tmp_path, monkeypatch):
    """`lamp train` mirrored to W&B with WANDB_MODE=offline: the local run file holds the config, every loss and
    evaluation at its step and the summary, decoded with wandb's own record definitions."""
    from lamp_cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("LAMP_WANDB_PROJECT", "lamp-test")
    monkeypatch.delenv("LAMP_MLFLOW_TRACKING_URI", raising=False)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    assert main(["train", *flags, "--output", str(tmp_path / "run"), "--quiet", "--wandb"]) == 0
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60  # wandb's service process writes the file on its own time, the exit last
    while not any(record.WhichOneof("record_type") == "exit" for record in wandb_records(run_file)):
        assert time.monotonic() < deadline, "wandb never wrote the run's end"
        time.sleep(0.2)
    history, config, summary = read_wandb_run(run_file)
    import json

    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [(row["_step"], row["loss"]) for row in history if "loss" in row] == [
        (point["step"], pytest.approx(point["loss"])) for point in result["history"]["train"]]
    assert [(row["_step"], row["eval_accuracy"]) for row in history if "eval_accuracy" in row] == [
        (point["step"], point["accuracy"]) for point in result["history"]["eval"]]
    assert config["rank"] == 2 and config["method"] == "lamp" and config["backbone_family"] == "seq2seq"
    assert summary["trainable_params"] == result["trainable_params"]
    assert summary["test_accuracy"] == pytest.approx(result["metrics"]["accuracy"])


def read_wandb_run(path: Path) -> tuple[list[dict], dict, dict]:
    """History rows, config and summary of a .wandb run file."""
    import json

    def values(items) -> dict:
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}

    history, config, summary = [], {}, {}
    for record in wandb_records(path):
        which = record.WhichOneof("record_type")
        if which == "history":
            history.append(values(record.history.item))
        elif which in ("run", "config"):
            config.update(values(record.run.config.update if which == "run" else record.config.update))
        elif which == "summary":
            summary.update(values(record.summary.update))
    return history, config, summary


def wandb_records(path: Path) -> Iterator:
    """The records of a .wandb file. wandb 0.31 ships no Python reader of its run files any more (its service is
    Go); they are LevelDB-style logs of wandb's own protobuf Records, decoded here with its Record class."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, block, position, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece after FIRST and MIDDLE ones
            record = Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_lamp_train_asking_for_a_tracker_that_is_not_set_up_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    from lamp_cli import main

    monkeypatch.delenv("LAMP_MLFLOW_TRACKING_URI", raising=False)
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    assert main(["train", *flags, "--output", str(tmp_path / "run"), "--mlflow"]) == 2
    assert capsys.readouterr().err == ("lamp train: error: mlflow: LAMP_MLFLOW_TRACKING_URI is not set here; set it "
                                       "to mirror runs to mlflow\n")
    assert not (tmp_path / "run").exists()


def test_a_tracker_variable_without_its_package_names_the_extra_to_install():
    kind = TrackerKind("mlflow", "MLflow", "LAMP_MLFLOW_TRACKING_URI", "lamp_no_such_package", "mlflow_tracker")
    assert kind.missing_package() == ("LAMP_MLFLOW_TRACKING_URI is set but lamp_no_such_package is not installed: "
                                      "pip install 'lamp-studio[mlflow]'")


@pytest.fixture
def loopback_dashboard() -> Iterator[None]:
    """The dashboard bound to loopback, as `lamp up` binds it by default: it asks for no login."""
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", None)


@pytest.mark.slow  # 3-5 s, and as long again to tear down Streamlit's script threads
def test_launch_offers_a_tracker_only_once_a_live_worker_has_it_and_the_run_keeps_the_choice(
        lamp_home, redis_url, monkeypatch, loopback_dashboard):
    import streamlit as st
    from rq.serializers import JSONSerializer
    from streamlit.testing.v1 import AppTest

    from worker.connection import redis_connection
    from worker.runner import LampWorker

    monkeypatch.setenv("LAMP_DATA_DIR", str(DATA))
    monkeypatch.delenv("LAMP_WANDB_PROJECT", raising=False)

    def launch_page() -> AppTest:
        st.cache_data.clear()
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=30)
        at.run()
        at.switch_page("views/launch.py").run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    assert not [box for box in launch_page().checkbox if box.key.startswith("launch.tracker.")]
    monkeypatch.setenv("LAMP_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the worker's side, as its host has it
    LampWorker(["lamp"], connection=redis_connection(), name="tracked", serializer=JSONSerializer).register_birth()
    assert queue.worker_trackers() == ["mlflow"]
    at = launch_page()
    box = at.checkbox(key="launch.tracker.mlflow")
    assert box.value is True and box.label == "mirror to MLflow"
    box.uncheck().run()
    at.number_input(key="launch.steps").set_value(2).run()
    at.button(key="launch.submit").click().run()
    with session_scope() as session:
        assert session.query(Run.trackers).one() == ({"mlflow": False},)
