"""The worker end to end: real `lamp worker` processes training tiny-t5 runs from the real queue into the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from lamp_common.result import RunResult
from lamp_engine.config import RunConfig
from store.accounts import Actor
from store.artifacts import artifact_path
from store.audit import actions_on
from store.db import dispose, ensure_schema, session_scope
from store.models import Run
from store.queries import get_run, list_runs, metric_series
from store.settings import host_name
from store.status import FINISHED
from worker import queue
from worker.connection import QueueUnavailable, redis_connection
from worker.jobs import run_folder, run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN = Actor("tester", admin=True)  # the queue's actions take the acting user
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()
VICTIM_STEPS = 400  # long enough that the kill lands mid-run on a fast machine too
TINY = {"model": "tiny-t5", "task": "sst2", "steps": 2, "batch_size": 2, "length": 4, "rank": 2,
        "max_eval_examples": 4, "data_dir": str(DATA_DIR)}


def tiny_config(**overrides) -> RunConfig:
    return RunConfig.from_flat({**TINY, **overrides})


def row(run_id: int) -> dict:
    with session_scope() as session:
        return get_run(session, run_id).to_dict()


def wait_for(run_id: int, done, timeout: float = 120) -> tuple[dict, list[str]]:
    """Poll the store until done(row) holds; returns the row and every distinct status seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        current = row(run_id)
        if not seen or seen[-1] != current["status"]:
            seen.append(current["status"])
        if done(current):
            return current, seen
        assert current["status"] not in FINISHED, f"run {run_id} ended early: {current['error']}"
        assert time.monotonic() < deadline, f"run {run_id} stuck at {current['status']} step {current['step']}"
        time.sleep(0.05)


def wait_until_dead(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        assert time.monotonic() < deadline, f"process {pid} outlived its killed worker"
        time.sleep(0.05)


def finish(worker: subprocess.Popen) -> None:
    """Wait for a burst worker to drain the queue and exit cleanly (its log is in the message otherwise)."""
    worker.wait(timeout=120)
    assert worker.returncode == 0, Path(worker.log_path).read_text()[-3000:]


@pytest.mark.slow
def test_submitted_run_goes_queued_running_succeeded_with_measurements(database_url, redis_url, tmp_path, start_worker):
    run_id = queue.submit_run(tiny_config())
    worker = start_worker("--burst")
    final, seen = wait_for(run_id, lambda r: r["status"] not in ("queued", "running"))
    finish(worker)
    assert seen == ["queued", "running", "succeeded"], final["error"]
    result = json.loads((Path(os.environ["LAMP_HOME"]) / "runs" / str(run_id) / "result.json").read_text())
    for name in RunResult.column_names():
        assert final[name] == result[name], name
    assert final["trainable_params"] == tiny_config().method.trainable_params(final["hidden_size"]) == 138
    assert final["main_metric_value"] == result["metrics"][result["main_metric"]]
    assert (final["progress"], final["step"], final["total_steps"], final["artifact_dir"]) == (
        1.0, 2, 2, f"runs/{run_id}")
    assert final["started_at"] <= final["finished_at"] and final["worker_pid"] and final["worker_name"]
    with session_scope() as session:
        run = get_run(session, run_id)
        losses = metric_series(session, [run_id], "loss")
        evals = metric_series(session, [run_id], "eval_" + result["main_metric"])
        assert artifact_path(run, "prompt.safetensors").stat().st_size > 0
    assert losses == [(run_id, point["step"], point["loss"]) for point in result["history"]["train"]]
    assert evals == [(run_id, point["step"], point[result["main_metric"]]) for point in result["history"]["eval"]]
    exported = subprocess.run([sys.executable, "-m", "lamp_cli", "export", str(run_id), "--to", str(tmp_path / "x")],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr
    exported_names = {path.name for path in (tmp_path / "x").iterdir()}  # from the store, as any host would
    assert {"peft", "prompt.safetensors", "result.json"} <= exported_names
    assert not {"trainer_state.pt", "dispersion.json"} & exported_names

    prediction = queue.submit_prediction(run_id, "a gripping, beautifully acted film")
    assert queue.prediction_result(prediction) is None  # no worker has taken it yet
    finish(start_worker("--burst"))
    answer = queue.prediction_result(prediction)
    assert answer["status"] == "finished", answer
    (predicted,) = answer["predictions"]
    assert predicted["text"] == "a gripping, beautifully acted film"
    assert predicted["prediction"] in predicted["scores"] and len(predicted["scores"]) == 2


@pytest.mark.slow
def test_cooperative_stop_saves_the_partial_prompt_and_force_kills_the_horse(lamp_home, redis_url, start_worker):
    gentle, forced = queue.submit_run(tiny_config(steps=2000)), queue.submit_run(tiny_config(steps=2000, seed=3))
    worker = start_worker("--burst")
    running, _ = wait_for(gentle, lambda r: r["status"] == "running" and r["step"] >= 2
                          and r["step_seconds_median"] is not None)
    assert running["trainable_params"] == 138 and running["prompt_tokens"] == 1 and running["hidden_size"] == 64
    assert running["total_steps"] == 2000 and running["step_seconds_median"] > 0  # live, while it trains
    assert queue.cancel_run(gentle, ADMIN) == "stop requested"
    final, _ = wait_for(gentle, lambda r: r["status"] != "running")
    assert final["status"] == "cancelled" and final["stop_requested"]
    assert 2 <= final["step"] < 2000 and final["error"].startswith("stopped on request at step")
    result = json.loads((lamp_home / "runs" / str(gentle) / "result.json").read_text())
    assert (result["status"], result["steps"]) == ("stopped", final["step"])
    assert (lamp_home / "runs" / str(gentle) / "prompt.safetensors").stat().st_size > 0

    horse = wait_for(forced, lambda r: r["status"] == "running" and r["step"] >= 2)[0]["worker_pid"]
    done = subprocess.run([sys.executable, "-m", "lamp_cli", "cancel", str(forced), "--force"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"run {forced}: cancelled"
    wait_until_dead(horse)
    finish(worker)  # the worker itself survives the killed horse and drains the queue
    assert (row(forced)["status"], row(forced)["error"]) == ("cancelled", "stopped by force (lamp cancel --force)")
    with session_scope() as session:
        job = queue.fetch_job(get_run(session, forced).job_id, redis_connection())
    assert job.get_status() == "stopped"


@pytest.mark.slow
def test_killed_worker_is_reconciled_to_failed_and_its_retry_succeeds(lamp_home, redis_url, start_worker):
    cancelled = queue.submit_run(tiny_config(seed=1))
    queue.cancel_run(cancelled, ADMIN)
    victim = queue.submit_run(tiny_config(steps=VICTIM_STEPS))
    worker = start_worker()
    wait_for(victim, lambda r: r["status"] == "running" and r["step"] >= 2)
    waiting = queue.submit_run(tiny_config(seed=2))  # stays queued behind the busy worker
    (busy,) = queue.workers()
    assert (busy["state"], busy["run_id"], busy["pid"]) == ("busy", victim, worker.pid)
    with session_scope() as session:
        before = {run.id: run.to_dict() for run in list_runs(session)}
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=30)
    wait_until_dead(before[victim]["worker_pid"])  # the work horse dies with its worker (PR_SET_PDEATHSIG)
    assert queue.reconcile() == [victim]
    with session_scope() as session:
        after = {run.id: run.to_dict() for run in list_runs(session)}
    assert after[victim]["status"] == "failed"
    assert after[victim]["error"].startswith("reconcile: its worker process") and "died" in after[victim]["error"]
    (retry,) = set(after) - set(before)  # queued again at once (LAMP_AUTO_RETRY, default 1)
    assert (after[retry]["status"], after[retry]["parent_id"]) == ("queued", victim)
    assert {k: v for k, v in after.items() if k not in (victim, retry)} == {
        k: v for k, v in before.items() if k != victim}
    assert queue.reconcile() == []
    queue.cancel_run(waiting, ADMIN)
    finish(start_worker("--burst"))
    final = row(retry)
    assert (final["status"], final["parent_id"], final["step"]) == ("succeeded", victim, VICTIM_STEPS), final["error"]


@pytest.mark.parametrize(("overrides", "error"), [
    ({"lr": 1e20, "steps": 4}, "training diverged: loss is nan at step"),
    ({"data_dir": "/nonexistent/lamp-data"}, None),
])
def test_failing_training_records_failed_with_the_engine_message(lamp_home, redis_url, overrides, error):
    run_id = queue.submit_run(tiny_config(**overrides))
    assert run_training(run_id) == {"run_id": run_id, "status": "failed"}
    final = row(run_id)
    assert final["status"] == "failed" and final["finished_at"]
    if error:
        assert final["error"].startswith(error)
    else:
        assert "/nonexistent/lamp-data" in final["error"] and "Traceback" not in final["error"]
        assert final["error"].endswith(f"(worker host {host_name()}, data folder /nonexistent/lamp-data)")
    assert run_training(run_id) == {"run_id": run_id, "status": "skipped"}  # a finished run never runs twice


def test_worker_maintenance_reconciles_the_store(lamp_home, redis_url):
    from rq import Queue
    from rq.serializers import JSONSerializer

    from worker.runner import LampWorker

    lost = queue.submit_run(tiny_config())
    connection = redis_connection()
    connection.flushdb()
    worker = LampWorker([Queue(queue.TRAIN_QUEUE, connection=connection, serializer=JSONSerializer)],
                        connection=connection, serializer=JSONSerializer)
    worker.run_maintenance_tasks()
    assert (row(lost)["status"], row(lost)["error"]) == (
        "failed", "reconcile: its job vanished from Redis before it started (Redis restarted or was flushed)")


@pytest.mark.parametrize("limit", ["0", "1", "2"])
def test_reconcile_queues_a_dead_run_again_up_to_lamp_auto_retry_times_in_a_row(lamp_home, redis_url, monkeypatch,
                                                                                 limit):
    monkeypatch.setenv("LAMP_AUTO_RETRY", limit)
    chain = [queue.submit_run(tiny_config())]
    for _ in range(3):
        redis_connection().flushdb()  # every job vanishes, as after a Redis restart without its data
        assert queue.reconcile() == [chain[-1]]
        with session_scope() as session:
            retries = [run.id for run in list_runs(session) if run.parent_id == chain[-1]]
        if not retries:
            break
        assert row(retries[0])["status"] == "queued"
        chain += retries
    assert len(chain) == int(limit) + 1
    assert all(row(run_id)["error"].startswith("reconcile: its job vanished") for run_id in chain)
    with session_scope() as session:
        recorded = [(a.action, a.actor, a.detail) for a in actions_on(session, chain[0])]
    assert recorded == ([("retry", "reconcile", f"as run {chain[1]} (LAMP_AUTO_RETRY)")] if limit != "0" else [])


def test_a_dead_run_whose_retry_cannot_be_queued_is_left_for_the_next_reconcile(lamp_home, redis_url, monkeypatch):
    """Redis went away between reconcile's look at the jobs and the retry's enqueue (the soak saw it: a Redis restart
    while a new worker reconciled): the run was left failed and never retried. It now stays as it was."""
    lost = queue.submit_run(tiny_config())
    connection = redis_connection()
    connection.flushdb()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")  # where the retry is enqueued: nothing answers
    with pytest.raises(QueueUnavailable):
        queue.reconcile(connection)
    assert (row(lost)["status"], row(lost)["error"], row(lost)["finished_at"]) == ("queued", None, None)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert queue.reconcile() == [lost]
    with session_scope() as session:
        assert [run.status for run in list_runs(session) if run.parent_id == lost] == ["queued"]


@pytest.mark.slow
def test_a_claimed_run_finds_its_folder_across_a_postgres_restart(tmp_path, monkeypatch):
    """The look-up of a claimed run's folder was the one store read of run_training without retries: a PostgreSQL
    restart at that moment failed the run with a bare OperationalError (seen in `lamp bench soak`). It now waits."""
    from private_servers import ServerGroup

    with ServerGroup("lamp-folder-") as group:
        postgres = group.postgres()
        monkeypatch.setenv("DATABASE_URL", postgres.url)
        monkeypatch.setenv("LAMP_HOME", str(tmp_path))
        try:
            ensure_schema()
            with session_scope() as session:
                run = Run(config={}, method="pt", model="tiny-t5", task="sst2", status="running",
                          artifact_dir="runs/7")
                session.add(run)
            postgres.stop("fast")
            restart = threading.Timer(1.0, postgres.start)
            restart.start()
            assert run_folder(run.id) == tmp_path.resolve() / "runs" / "7"
            restart.join()
        finally:
            dispose(postgres.url)


def test_a_job_that_a_dead_worker_took_from_the_queue_goes_back_in_it(lamp_home, redis_url):
    """A worker killed between taking a job from the queue and starting it left the job 'queued' in no queue, and
    its run waited for ever, unseen by reconcile (the 30-minute soak ended with two such runs). It is queued again."""
    run_id = queue.submit_run(tiny_config())
    connection = redis_connection()
    train = queue.get_queue(queue.TRAIN_QUEUE, connection)
    assert connection.lrem(train.key, 0, row(run_id)["job_id"]) == 1  # what the dead worker's take left behind
    with session_scope() as session:
        assert queue.stuck_reason(get_run(session, run_id), connection) == queue.DROPPED
    assert queue.reconcile() == []
    assert (row(run_id)["status"], queue.queue_position(run_id)) == ("queued", 1)
    assert queue.reconcile() == [] and train.count == 1
