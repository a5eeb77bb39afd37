"""The queue against the real Redis and store: submit, sweep, position, cancel, retry, reconcile, concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from lamp_engine.config import RunConfig, expand_grid
from lamp_engine.errors import ConfigError, LampError
from store.accounts import Actor
from store.db import session_scope
from store.models import Run, Sweep
from store.queries import get_run, list_runs
from worker import queue
from worker.connection import embedded_socket, redis_connection, redis_url, stop_embedded_redis

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN = Actor("tester", admin=True)  # the queue's actions take the acting user
TINY = {"model": "tiny-t5", "task": "sst2", "steps": 2, "batch_size": 2, "length": 4, "rank": 2}


def tiny_config(**overrides) -> RunConfig:
    return RunConfig.from_flat({**TINY, **overrides})


def rows() -> dict[int, dict]:
    with session_scope() as session:
        return {run.id: run.to_dict() for run in list_runs(session)}


def lamp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lamp_cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=env)


def test_submit_stores_a_queued_run_and_enqueues_only_its_id(database_url, redis_url):
    run_id = queue.submit_run(tiny_config(seed=7))
    with session_scope() as session:
        run = get_run(session, run_id)
        assert (run.status, run.method, run.model, run.task, run.progress) == ("queued", "lamp", "tiny-t5", "sst2", 0)
        assert RunConfig.from_dict(run.config) == tiny_config(seed=7)
        job_id = run.job_id
    raw = redis.Redis.from_url(redis_url).hgetall(f"rq:job:{job_id}")
    func_name, _instance, args, kwargs = json.loads(zlib.decompress(raw[b"data"]))  # JSON, never a pickle
    assert (func_name, args, kwargs) == ("worker.jobs.run_training", [run_id], {})
    assert int(raw[b"timeout"]) == queue.DEFAULT_JOB_TIMEOUT_S
    assert queue.get_queue().job_ids == [job_id]


def test_queue_position_and_cancel_of_a_queued_run(lamp_home, redis_url):
    first, second, third = (queue.submit_run(tiny_config(seed=seed)) for seed in (1, 2, 3))
    assert [queue.queue_position(run_id) for run_id in (first, second, third)] == [1, 2, 3]
    assert queue.cancel_run(second, ADMIN) == "cancelled"
    assert [queue.queue_position(run_id) for run_id in (first, second, third)] == [1, None, 2]
    with session_scope() as session:
        cancelled = get_run(session, second)
        assert (cancelled.status, cancelled.error) == ("cancelled", "cancelled before it started")
        assert cancelled.finished_at >= cancelled.created_at
        job = queue.fetch_job(cancelled.job_id, redis_connection())
    assert job.get_status() == "canceled"
    with pytest.raises(LampError, match=f"^run {second}: already cancelled"):
        queue.cancel_run(second, ADMIN)
    assert queue.reconcile() == []  # cancelled rows are never touched, healthy queued ones neither
    assert [row["status"] for row in rows().values()] == ["queued", "cancelled", "queued"]


def test_retry_queues_a_new_run_linked_to_its_parent(lamp_home, redis_url):
    parent = queue.submit_run(tiny_config(seed=5))
    with pytest.raises(LampError, match="only failed or cancelled runs can be retried"):
        queue.retry_run(parent, ADMIN)
    queue.cancel_run(parent, ADMIN)
    child = queue.retry_run(parent, ADMIN)
    with session_scope() as session:
        old, new = get_run(session, parent), get_run(session, child)
        assert (new.parent_id, new.status, new.config) == (parent, "queued", old.config)
        assert new.job_id != old.job_id
    assert queue.get_queue().job_ids == [new.job_id]


def test_sweep_queues_every_grid_combination_after_validating_all(database_url, redis_url):
    grid = {"length": [4, 8], "method": ["lamp", "pt"]}
    sweep_id, run_ids = queue.submit_sweep(expand_grid(tiny_config().flat(), grid), grid, "ablation")
    with session_scope() as session:
        runs = list_runs(session, ids=run_ids)
        assert {(run.config["method"]["length"], run.method) for run in runs} == {
            (4, "lamp"), (8, "lamp"), (4, "pt"), (8, "pt")}
        assert {run.sweep_id for run in runs} == {sweep_id}
        assert session.get(Sweep, sweep_id).grid == grid
    with pytest.raises(ConfigError, match="^rank: must be positive"):
        expand_grid(tiny_config().flat(), {"rank": [2, 0]})
    with pytest.raises(ConfigError, match="^colour: unknown configuration field"):
        expand_grid(tiny_config().flat(), {"colour": ["red"]})
    assert len(rows()) == 4 and len(queue.get_queue().job_ids) == 4


def test_redis_flushed_while_queued_reconcile_fails_them_and_keeps_every_row(database_url, redis_url):
    queued = [queue.submit_run(tiny_config(seed=seed)) for seed in range(3)]
    cancelled = queue.submit_run(tiny_config(seed=9))
    queue.cancel_run(cancelled, ADMIN)
    before = rows()
    redis.Redis.from_url(redis_url).flushdb()
    assert queue.reconcile() == queued
    after = rows()
    retries = [row for run_id, row in after.items() if run_id not in before]  # LAMP_AUTO_RETRY queued each again
    assert sorted((row["parent_id"], row["status"]) for row in retries) == [(run_id, "queued") for run_id in queued]
    assert set(before) <= set(after) and after[cancelled] == before[cancelled]
    for run_id in queued:
        assert after[run_id]["status"] == "failed"
        assert after[run_id]["error"] == ("reconcile: its job vanished from Redis before it started "
                                          "(Redis restarted or was flushed)")
    assert queue.reconcile() == []  # failed rows stay as they are


SUBMITTER = """
import sys
from lamp_engine.config import RunConfig, expand_grid
from worker.queue import submit_run
worker = int(sys.argv[1])
for i in range(50):
    print(submit_run(RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "seed": worker * 1000 + i})))
"""


@pytest.mark.slow
def test_200_submissions_from_4_processes_give_200_distinct_runs(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("LAMP_QUEUE_QUOTA", "200")  # one OS user submits them all
    processes = [subprocess.Popen([sys.executable, "-c", SUBMITTER, str(worker)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for worker in range(4)]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, [err[-2000:] for _, err in outputs]
    printed = [int(line) for out, _ in outputs for line in out.split()]
    with session_scope() as session:
        stored = session.execute(select(Run.id, Run.job_id, Run.config)).all()
        assert session.scalar(select(func.count(Run.id))) == 200
    assert sorted(printed) == sorted(run.id for run in stored) and len(set(printed)) == 200
    assert {run.config["train"]["seed"] for run in stored} == {w * 1000 + i for w in range(4) for i in range(50)}
    assert set(queue.get_queue().job_ids) == {run.job_id for run in stored}


@pytest.mark.slow
def test_cli_submit_status_runs_cancel_retry(lamp_home, redis_url):
    submitted = lamp("submit", "--model", "tiny-t5", "--task", "cb", "--rank", "3", "--length", "8")
    assert submitted.returncode == 0, submitted.stderr
    run_id = int(submitted.stdout)
    assert submitted.stderr == (f"run {run_id} queued: lamp on tiny-t5 / cb, 219 trainable parameters, "
                                "2 prompt tokens\n")  # 8*3 + 3 + 3*64, before any model loads
    status = lamp("status", str(run_id), "--json")
    data = json.loads(status.stdout)
    assert (data["status"], data["task"], data["config"]["method"]["rank"], data["queue_position"]) == (
        "queued", "cb", 3, 1)
    assert lamp("cancel", str(run_id)).stdout.strip() == f"run {run_id}: cancelled"
    retried = int(lamp("retry", str(run_id)).stdout)
    listed = json.loads(lamp("runs", "--json").stdout)
    assert [(row["id"], row["status"], row["parent_id"]) for row in listed] == [
        (retried, "queued", run_id), (run_id, "cancelled", None)]
    table = lamp("runs").stdout.splitlines()
    assert table[0].split()[:3] == ["id", "status", "method"] and table[1].split()[:2] == [str(retried), "queued"]


def test_cli_submit_counts_an_adapter_from_the_alias_shape_before_loading(lamp_home, redis_url):
    lora = lamp("submit", "--model", "smollm2-135m", "--method", "lora", "--target-modules", "all-linear")
    assert lora.returncode == 0, lora.stderr
    assert lora.stderr == (f"run {int(lora.stdout)} queued: lora on smollm2-135m / sst2, 2,442,240 trainable "
                           "parameters, 0 prompt tokens\n")  # PEFT's count for all seven projections, r = 8


@pytest.mark.parametrize(("args", "env_extra", "message"), [
    (["submit", "--rank", "0"], {}, "lamp submit: rank: must be positive, got 0"),
    (["submit", "--colour", "red"], {}, "lamp submit: error: unrecognized arguments: --colour red (see `lamp "
                                        "submit --help`)"),
    (["submit", "--method", "pt", "--pool", "4"], {}, "lamp submit: pool: applies to lamp only, not to pt"),
    (["submit", "--task", "rte", "--verbalizers", "0=a,1=b"], {}, "lamp submit: verbalizers: applies to the custom "
                                                                  "task only"),
    (["status", "424242"], {}, "lamp status: run 424242: no such run in the store"),
    (["submit"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, "lamp submit: REDIS_URL: cannot reach Redis at"),
    (["sweep", "--grid", "rank"], {}, "lamp sweep: grid: 'rank' should look like FIELD=V1,V2"),
])
def test_cli_bad_input_is_one_line_and_exit_code_2(lamp_home, redis_url, args, env_extra, message):
    import os

    done = lamp(*args, env={**os.environ, **env_extra})
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr


@pytest.mark.slow
def test_embedded_redis_is_started_once_and_shared_by_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    probe = ("from worker.connection import redis_connection\n"
             "print(redis_connection().info('server')['process_id'])")
    try:
        processes = [subprocess.Popen([sys.executable, "-c", probe], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                      text=True) for _ in range(3)]
        pids = {process.communicate(timeout=60)[0].strip() for process in processes}
        assert len(pids) == 1 and pids != {""}
        assert redis_url() == f"unix://{embedded_socket()}"
        assert str(redis_connection().info("server")["process_id"]) in pids  # still up after they exited
    finally:
        assert stop_embedded_redis()
