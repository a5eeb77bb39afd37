"""A learning-rate search through the queue (issue 35), against the real Redis and store: `submit_tuned` queues the
search as one sweep, and once its last point ends the worker's hook queues the finals at the best rate, once."""

from __future__ import annotations

from sqlalchemy import update

from lamp_engine.config import RunConfig
from store.accounts import Actor
from store.db import session_scope
from store.models import Run
from store.queries import get_run, list_runs
from worker import queue
from worker.jobs import _continue_search

TINY = {"model": "tiny-t5", "task": "sst2", "method": "pt", "length": 4, "steps": 2, "batch_size": 2}


def finish_point(run_id: int, status: str, accuracy: float | None) -> None:
    """What a worker records when a search point ends (its best selection accuracy; nothing reported)."""
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            status=status, main_metric="accuracy", metrics={},
            best_metrics={"accuracy": accuracy} if accuracy is not None else {}))


def test_a_search_queues_its_finals_at_the_best_rate_once_its_last_point_ends(lamp_home, redis_url):
    configs = [RunConfig.from_flat({**TINY, "seed": seed}) for seed in (1, 2)]
    sweep_id, points = queue.submit_tuned(configs, {"seed": [1, 2]}, "tune pt")
    with session_scope() as session:
        rows = [get_run(session, run_id) for run_id in points]
        assert [r.config["train"]["lr"] for r in rows] == [0.003, 0.01, 0.03, 0.3]
        assert {(r.sweep_id, r.config["train"]["seed"], r.config["data"]["selection_only"]) for r in rows} == {
            (sweep_id, 1, True)}
        assert rows[0].lr_tuning["role"] == "search" and rows[0].lr_tuning["seeds"] == [1, 2]
    for run_id, accuracy in zip(points[:3], (61.0, 74.0, 70.0), strict=True):
        finish_point(run_id, "succeeded", accuracy)
        _continue_search(run_id)
    assert queue.queue_tuned_finals(points[2]) == []  # one point still queued: no finals yet
    assert queue.cancel_run(points[3], Actor("tester", admin=True)) == "cancelled"  # the last point ends
    assert queue.queue_tuned_finals(points[0]) == []  # queued once only
    with session_scope() as session:
        rows = [r for r in list_runs(session) if r.id not in points][::-1]
        assert [(r.config["train"]["lr"], r.config["train"]["seed"], r.config["data"]["selection_only"])
                for r in rows] == [(0.01, 1, False), (0.01, 2, False)]
        assert rows[0].sweep_id == sweep_id and rows[0].status == "queued"
        assert rows[0].lr_tuning == {"role": "final", "key": rows[0].lr_tuning["key"], "chosen_lr": 0.01,
                                     "grid": [[0.003, 61.0], [0.01, 74.0], [0.03, 70.0]], "metric": "accuracy",
                                     "split": "heldout"}


def test_lamp_sweep_tune_lr_queues_one_search_per_method_and_refuses_the_reported_set(lamp_home, redis_url, capsys):
    from worker.cli import main

    flags = ["--model", "tiny-t5", "--task", "sst2", "--steps", "2", "--length", "4", "--rank", "2"]
    assert main(["sweep", "--tune", "lr", *flags, "--grid", "method=pt,lora", "--grid", "seed=1,2,3"]) == 0
    assert capsys.readouterr().out.startswith("sweep 1: learning-rate search runs 1 2 3 4 5 6 7 8; the final runs")
    with session_scope() as session:
        points = list_runs(session)[::-1]
    assert [(r.method, r.config["train"]["lr"]) for r in points] == [
        ("pt", 0.003), ("pt", 0.01), ("pt", 0.03), ("pt", 0.3),
        ("lora", 1e-4), ("lora", 3e-4), ("lora", 1e-3), ("lora", 3e-3)]
    assert {r.lr_tuning["seeds"] == [1, 2, 3] for r in points} == {True}
    assert main(["sweep", "--tune", "lr", *flags, "--select-on", "validation"]) == 2
    assert "tune: a learning-rate search selects on a split held out of training" in capsys.readouterr().err
    assert main(["sweep", *flags]) == 2
    assert "grid: give --grid FIELD=V1,V2" in capsys.readouterr().err


def test_a_failed_search_point_retried_counts_with_its_retry_score(lamp_home, redis_url):
    _, points = queue.submit_tuned([RunConfig.from_flat({**TINY, "seed": 1})], {}, "tune pt")
    finish_point(points[0], "failed", None)
    _continue_search(points[0])
    retry = queue.retry_run(points[0], Actor("tester", admin=True))
    for run_id in points[1:]:
        finish_point(run_id, "succeeded", 60.0)
        assert queue.queue_tuned_finals(run_id) == []  # the retry of the first point is still queued
    finish_point(retry, "succeeded", 90.0)
    (final,) = queue.queue_tuned_finals(retry)
    with session_scope() as session:
        run = get_run(session, final)
        assert (run.config["train"]["lr"], run.lr_tuning["grid"]) == (0.003, [[0.003, 90.0], [0.01, 60.0],
                                                                             [0.03, 60.0], [0.3, 60.0]])
