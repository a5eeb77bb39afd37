"""'Tune the learning rate first' in a real browser (issue 35): the Launch form queues the search as one sweep, the
search's end queues the finals at the best rate (the worker's hook, called here as a worker calls it when the
last point ends), and Runs and Compare show the chosen rate and the grid it was chosen over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from browser import CHROMIUM, launch_browser, settle, streamlit_app
from redis import Redis
from sqlalchemy import update

from store.db import dispose, session_scope
from store.models import Run
from worker.jobs import _continue_search

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`"),
    pytest.mark.timeout(180),
]


@pytest.fixture()
def dashboard(tmp_path, monkeypatch, redis_url):
    """The dashboard on a private store and Redis database (no worker: the test records the outcomes)."""
    env = {**os.environ, "LAMP_HOME": str(tmp_path / "home"), "DATABASE_URL": f"sqlite:///{tmp_path / 'lamp.db'}",
           "REDIS_URL": redis_url}
    for key in ("LAMP_HOME", "DATABASE_URL"):
        monkeypatch.setenv(key, env[key])
    with open(tmp_path / "dashboard.log", "w") as log, streamlit_app(env, log) as url:
        yield url
    Redis.from_url(redis_url).flushdb()
    dispose(env["DATABASE_URL"])


def record(run_id: int, best: float, reported: float | None = None) -> None:
    """What the worker records when a run ends: its best selection accuracy, and a final's reported one."""
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            status="succeeded", main_metric="accuracy", best_metrics={"accuracy": best},
            metrics={"accuracy": reported} if reported is not None else {}, main_metric_value=reported))


@pytest.mark.slow
def test_tune_the_learning_rate_first_queues_the_search_then_the_finals_at_the_best_rate(dashboard):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{dashboard}/launch")
        settle(page)
        page.get_by_label("model", exact=True).click()
        page.get_by_role("option", name="tiny-t5: a random 2-layer T5 for tests of the seq2seq path; its accuracy "
                                        "means nothing").click()
        settle(page)
        page.get_by_text("tune the learning rate first").click()
        settle(page)
        expect(page.get_by_text("first 4 search runs (1 search over lr 0.003, 0.01, 0.03, 0.3, on seed 42"))\
            .to_be_visible()
        page.get_by_role("button", name="Launch", exact=True).click()
        expect(page.get_by_text("Queued 4 learning-rate search runs: #1, #2, #3, #4; the final runs follow"))\
            .to_be_visible(timeout=30_000)

        for run_id, accuracy in zip((1, 2, 3, 4), (55.0, 74.0, 70.0, 50.0), strict=True):
            record(run_id, accuracy)
            _continue_search(run_id)  # the worker's hook after each run; the last one queues the final
        record(5, 73.0, reported=71.5)

        page.goto(f"{dashboard}/compare?runs=5,2&ref=5")
        settle(page)
        table = page.get_by_test_id("stDataFrame").first
        expect(table).to_contain_text("lr 1e-2, tuned over 4")
        expect(table).to_contain_text("lr 0.01, search point (selection 74.0)")
        page.goto(dashboard)  # Runs: the search and its final in one sweep
        settle(page)
        expect(page.get_by_test_id("stDataFrame").first).to_contain_text("lr 1e-2, tuned over 4")
        browser.close()
    with session_scope() as session:
        final = session.get(Run, 5)
        assert (final.sweep_id, final.config["train"]["lr"], final.lr_tuning["chosen_lr"]) == (1, 0.01, 0.01)
