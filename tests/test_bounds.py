"""Limits that keep one person from stopping everyone (issue 30): sweep size, queue quota, try-it rate."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

import lamp_cli
from app.forms import LaunchRequest
from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError, LampError
from store.db import session_scope
from store.models import Run, Sweep, utcnow
from store.status import RunStatus
from worker import queue

TINY = {"model": "tiny-t5", "task": "sst2", "steps": 2, "batch_size": 2, "length": 4, "rank": 2}
THOUSAND = list(range(1, 1001))


def stored_counts() -> tuple[int, int]:
    with session_scope() as session:
        return session.scalar(select(func.count(Run.id))), session.scalar(select(func.count(Sweep.id)))


def test_a_million_run_sweep_is_refused_by_the_form_at_once(lamp_home):
    started = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        LaunchRequest(values=TINY, grid={"length": THOUSAND, "rank": THOUSAND}).configs  # noqa: B018
    assert time.perf_counter() - started < 1
    assert str(refused.value) == ("sweep: 1000 length x 1000 rank makes 1,000,000 runs, over the limit of 500; "
                                  "give fewer values (or raise LAMP_MAX_SWEEP_RUNS)")


def test_a_million_run_sweep_is_refused_on_the_command_line_and_nothing_is_queued(database_url, redis_url, capsys):
    values = ",".join(map(str, THOUSAND))
    started = time.perf_counter()
    code = lamp_cli.main(["sweep", "--model", "tiny-t5", "--grid", f"length={values}", "--grid", f"rank={values}"])
    assert time.perf_counter() - started < 1
    assert code == 2
    assert capsys.readouterr().err == ("lamp sweep: sweep: 1000 length x 1000 rank makes 1,000,000 runs, over the "
                                       "limit of 500; give fewer values (or raise LAMP_MAX_SWEEP_RUNS)\n")
    assert stored_counts() == (0, 0) and queue.get_queue().count == 0


def test_the_sweep_limit_is_a_setting_and_binds_the_queue_too(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("LAMP_MAX_SWEEP_RUNS", "2")
    grid = {"rank": [1, 2, 3]}
    configs = [RunConfig.from_flat({**TINY, "rank": rank}) for rank in grid["rank"]]
    with pytest.raises(ConfigError, match="makes 3 runs, over the limit of 2"):
        queue.submit_sweep(configs, grid, "three")
    assert stored_counts() == (0, 0)
    monkeypatch.setenv("LAMP_MAX_SWEEP_RUNS", "3")
    assert len(queue.submit_sweep(configs, grid, "three")[1]) == 3


def test_queue_quota_refuses_runs_beyond_it_per_person(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("LAMP_QUEUE_QUOTA", "3")
    for seed in (1, 2):
        queue.submit_run(RunConfig.from_flat({**TINY, "seed": seed}), submitted_by="alice")
    configs = [RunConfig.from_flat({**TINY, "rank": rank}) for rank in (1, 2)]
    with pytest.raises(LampError) as refused:
        queue.submit_sweep(configs, {"rank": [1, 2]}, "two", submitted_by="alice")
    assert str(refused.value) == ("queue quota: alice has 2 queued runs and asks for 2 more, over the quota of 3; "
                                  "wait for some to start or cancel some (LAMP_QUEUE_QUOTA sets the quota)")
    assert stored_counts() == (2, 0)
    third = queue.submit_run(RunConfig.from_flat(TINY), submitted_by="alice")
    with pytest.raises(LampError, match="alice has 3 queued runs and asks for 1 more"):
        queue.submit_run(RunConfig.from_flat(TINY), submitted_by="alice")
    queue.submit_run(RunConfig.from_flat(TINY), submitted_by="bob")  # someone else's quota is their own
    with session_scope() as session:
        session.get(Run, third).status = RunStatus.RUNNING  # a run that started leaves room for another
    queue.submit_run(RunConfig.from_flat(TINY), submitted_by="alice")
    assert queue.get_queue().count == 5


def finished_run() -> int:
    with session_scope() as session:
        run = Run(config=RunConfig.from_flat(TINY).to_dict(), method="lamp", model="tiny-t5", task="sst2",
                  status=RunStatus.SUCCEEDED, created_at=utcnow(), progress=1.0, step=2, stop_requested=False,
                  artifact_dir="runs/1", submitted_by="alice")
        session.add(run)
        session.flush()
        return run.id


def test_try_it_is_limited_per_person_and_minute(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("LAMP_PREDICTIONS_PER_MINUTE", "3")
    run_id = finished_run()
    for _ in range(3):
        queue.submit_prediction(run_id, "a fine film", requested_by="bob")
    with pytest.raises(LampError) as refused:
        queue.submit_prediction(run_id, "a fine film", requested_by="bob")
    assert str(refused.value) == ("try it: bob asked for more than 3 predictions this minute; wait a minute "
                                  "(LAMP_PREDICTIONS_PER_MINUTE sets the allowance)")
    queue.submit_prediction(run_id, "a fine film", requested_by="carol")
    assert queue.get_queue(queue.PREDICT_QUEUE).count == 4


@pytest.mark.parametrize(("overrides", "message"), [
    ({"steps": 10_000_000}, "steps: must be at most 1,000,000, got 10,000,000 (a bound no real run needs)"),
    ({"batch_size": 100_000}, "batch_size: must be at most 4,096, got 100,000 (a bound no real run needs)"),
    ({"eval_batch_size": 5000}, "eval_batch_size: must be at most 4,096, got 5,000 (a bound no real run needs)"),
    ({"max_source_length": 10**9}, "max_source_length: must be at most 32,768, got 1,000,000,000 (a bound no real "
                                   "run needs)"),
    ({"epochs": 1e6}, "epochs: must be at most 1,000, got 1,000,000.0 (a bound no real run needs)"),
    ({"length": 100_000, "rank": 2}, "length: must be at most 4,096, got 100,000 (a bound no real run needs)"),
    ({"method": "lora", "rank": 10**6}, "rank: must be at most 4,096, got 1,000,000 (a bound no real run needs)"),
    ({"max_train_examples": 10**9}, "max_train_examples: must be at most 100,000,000, got 1,000,000,000 (a bound "
                                    "no real run needs)"),
])
def test_numbers_beyond_what_a_gpu_run_could_want_are_refused_in_one_line(overrides, message):
    values = {k: v for k, v in TINY.items() if k not in ("length", "rank") or overrides.get("method") is None}
    with pytest.raises(ConfigError) as refused:
        RunConfig.from_flat({**values, **overrides})
    assert str(refused.value) == message


def test_the_bounds_are_said_in_the_help_and_the_largest_values_still_pass():
    from lamp_engine.config import flat_fields

    assert flat_fields()["steps"].help.startswith("optimizer steps (overrides --epochs) (at most 1,000,000)")
    config = RunConfig.from_flat({**TINY, "steps": 1_000_000, "batch_size": 4096, "max_source_length": 32_768,
                                  "length": 4096, "rank": 4096, "eval_batch_size": 4096})
    assert (config.train.steps, config.method.length) == (1_000_000, 4096)


def test_parallel_submissions_cannot_share_the_last_places_of_a_quota(database_url, redis_url, monkeypatch):
    monkeypatch.setenv("LAMP_QUEUE_QUOTA", "3")

    def submit(seed: int) -> str:
        try:
            queue.submit_run(RunConfig.from_flat({**TINY, "seed": seed}), submitted_by="alice")
            return "queued"
        except LampError as exc:
            return str(exc).split(":")[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = sorted(pool.map(submit, range(8)))
    assert outcomes == ["queue quota"] * 5 + ["queued"] * 3
    assert stored_counts() == (3, 0) and queue.get_queue().count == 3
