"""Three "hosts" on this machine that share only the real PostgreSQL and Redis, as hosts without a shared disk do:
a dashboard (this process, LAMP_HOME=A) and two workers (LAMP_HOME=B and LAMP_HOME=C, started as `lamp worker`).

A run on a CSV uploaded through the dashboard's backend trains on B; a second run is killed with kill -9 on B,
retried by reconcile (LAMP_AUTO_RETRY), and resumes on C from its stored checkpoint. Then B's and C's folders are
deleted, and A still downloads the prompt, loads the dispersion, exports the run, and has C answer a "try it"
prediction: everything comes from the store.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from safetensors.numpy import load
from sqlalchemy import select

from app import backend
from app.forms import LaunchRequest
from store.db import session_scope
from store.models import Run
from store.queries import get_run
from store.status import FINISHED
from worker import queue

REPO_ROOT = Path(__file__).resolve().parents[1]
CSV = "review,stars\n" + "".join(f"{'a warm funny film' if i % 2 else 'a dull tired film'} {i},{i % 2}\n"
                                 for i in range(40))
RUN = {"model": "tiny-t5", "task": "custom", "text_column": "review", "label_column": "stars",
       "verbalizers": "0=bad,1=good", "batch_size": 2, "length": 4, "rank": 2, "max_eval_examples": 4}
CHECKPOINT_EVERY = 5
RUN_SECONDS = 10  # the killed run is sized to train this long, so the kill always lands mid-run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def hosts(tmp_path, postgres_url, redis_url, monkeypatch, start_worker):
    """The dashboard's LAMP_HOME (this process) and a function starting a worker on host B or C."""
    homes = {name: tmp_path / name for name in "ABC"}
    monkeypatch.setenv("LAMP_HOME", str(homes["A"]))

    def start_on(host: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "LAMP_HOME": str(homes[host]), "LAMP_HOST": f"host-{host}",
               "LAMP_CHECKPOINT_STEPS": str(CHECKPOINT_EVERY), "LAMP_CHECKPOINT_SECONDS": "0"}
        return start_worker(*args, env=env, log_name=f"worker-{host}")

    return homes, start_on


def row(run_id: int) -> dict:
    with session_scope() as session:
        return get_run(session, run_id).to_dict()


def wait_for(run_id: int, done, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while not done(current := row(run_id)):
        assert current["status"] not in FINISHED, f"run {run_id} ended early: {current['error']}"
        assert time.monotonic() < deadline, f"run {run_id} stuck at {current['status']} step {current['step']}"
        time.sleep(0.05)
    return current


def steps_lasting(seconds: float, step_seconds: float) -> int:
    """Enough steps to train for about `seconds` at the measured step time (at least 120): a fast machine must
    not finish the run between two polls of the test."""
    return max(120, math.ceil(seconds / step_seconds))


def finish(worker: subprocess.Popen) -> None:
    worker.wait(timeout=240)
    assert worker.returncode == 0, Path(worker.log_path).read_text()[-3000:]


def test_runs_train_on_b_resume_on_c_and_the_dashboard_on_a_needs_neither_folder(hosts, tmp_path):
    homes, start_worker = hosts
    reference = backend.store_upload_file(CSV.encode(), "reviews.csv")  # what the Launch page's upload does
    (first,) = backend.submit(LaunchRequest(values={**RUN, "train_file": reference, "steps": 4}), "one")
    finish(start_worker("B", "--burst"))
    trained = row(first)
    assert trained["status"] == "succeeded", trained["error"]
    assert (homes["B"] / "uploads").is_dir() and not (homes["A"] / "uploads").exists()

    steps = steps_lasting(RUN_SECONDS, trained["step_seconds_median"])
    second = queue.submit_run(LaunchRequest(values={**RUN, "train_file": reference, "steps": steps, "seed": 2})
                              .configs[0])
    victim = start_worker("B")
    killed_at = wait_for(second, lambda r: (r["checkpoint_step"] or 0) >= 2 * CHECKPOINT_EVERY)
    os.killpg(victim.pid, signal.SIGKILL)  # kill -9 of the worker and its work horse, mid-run
    victim.wait(timeout=30)
    time.sleep(0.5)
    assert queue.reconcile() == [second]
    failed = row(second)
    assert failed["status"] == "failed" and failed["step"] < steps
    with session_scope() as session:  # reconcile queued it again (LAMP_AUTO_RETRY, default 1)
        (retry,) = session.scalars(select(Run.id).where(Run.parent_id == second))
    assert row(retry)["checkpoint_step"] == failed["checkpoint_step"] >= killed_at["checkpoint_step"]
    finish(start_worker("C", "--burst"))
    resumed = row(retry)
    assert resumed["status"] == "succeeded", resumed["error"]
    assert (resumed["resumed_from_step"], resumed["step"]) == (failed["checkpoint_step"], steps)
    assert (homes["C"] / "runs" / str(retry) / "result.json").is_file()

    shutil.rmtree(homes["B"])
    shutil.rmtree(homes["C"])
    record = backend.load_run(first)
    prompt = load(backend.read_run_bytes(record, "prompt.safetensors"))
    assert prompt["prompt"].shape[1] == trained["hidden_size"]
    assert backend.read_run_json(record, "dispersion.json")  # the Dispersion page draws from it
    adapter = zipfile.ZipFile(io.BytesIO(backend.read_run_bytes(record, "peft")))
    assert "peft/adapter_config.json" in adapter.namelist()
    exported = subprocess.run([sys.executable, "-m", "lamp_cli", "export", str(first), "--to", str(tmp_path / "x")],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=os.environ)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "x" / "prompt.safetensors").read_bytes() == backend.read_run_bytes(record,
                                                                                       "prompt.safetensors")
    assert not (homes["A"] / "runs").exists()

    prediction = queue.submit_prediction(first, "a warm funny film")
    finish(start_worker("C", "--burst"))  # C's folder is gone: it fetches the run's files from the store
    answer = queue.prediction_result(prediction)
    assert answer["status"] == "finished", answer
    assert set(answer["predictions"][0]["scores"]) == {"bad", "good"}
