"""Figure 6 in a real browser: Debian's Chromium through Playwright on `streamlit run`, with a PT run and a LAMP run
trained for real (tiny-t5, SST-2) in the store. The Dispersion view opens on the paper's picture: t-SNE, PT's
tokens blue and LAMP's red, and the caption saying what is plotted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from browser import CHROMIUM, IDLE, ROOT, launch_browser, streamlit_app

from lamp_engine.config import RunConfig
from lamp_engine.train import train
from store.db import dispose, session_scope
from store.models import Run

DATA = (ROOT.parent / "shared" / "data").resolve()
CHART = "[data-testid='stVegaLiteChart']"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`"),
    pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is missing"),
    pytest.mark.slow,
    pytest.mark.timeout(240),
]


def store_trained_runs(home: Path, folder: Path) -> dict[str, int]:
    """A PT run and a LAMP run on tiny-t5 / SST-2, trained here, stored as a worker stores them."""
    ids = {}
    for method in ("pt", "lamp"):
        config = RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "data_dir": str(DATA), "method": method,
                                      "length": 8, "steps": 2, "batch_size": 2, "max_eval_examples": 4,
                                      **({"rank": 2, "pool": 2} if method == "lamp" else {})})
        result = train(config, folder / method)
        with session_scope() as session:
            run = Run(config=result.config, method=method, model="tiny-t5", task="sst2", status="succeeded",
                      progress=1.0, step=2, total_steps=2, metrics=result.metrics, main_metric="accuracy",
                      main_metric_value=result.metrics["accuracy"], prompt_tokens=result.prompt_tokens,
                      hidden_size=64)
            session.add(run)
            session.flush()
            shutil.copytree(folder / method, home / "runs" / str(run.id))
            run.artifact_dir = f"runs/{run.id}"
            ids[method] = run.id
    return ids


@pytest.fixture()
def dashboard(tmp_path, monkeypatch, redis_url):
    """The dashboard alone (no worker) on a store holding the two runs."""
    home = tmp_path / "home"
    env = {**os.environ, "LAMP_HOME": str(home), "DATABASE_URL": f"sqlite:///{tmp_path / 'lamp.db'}",
           "REDIS_URL": redis_url}
    for key in ("LAMP_HOME", "DATABASE_URL"):
        monkeypatch.setenv(key, env[key])
    ids = store_trained_runs(home, tmp_path / "trained")
    try:
        with open(tmp_path / "streamlit.log", "w") as log, streamlit_app(env, log) as url:
            yield url, ids
    finally:
        dispose(env["DATABASE_URL"])


def test_dispersion_opens_on_figure_6_with_t_sne_two_colours_and_the_caption(dashboard):
    from playwright.sync_api import expect, sync_playwright

    url, ids = dashboard
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(f"{url}/dispersion")
        page.wait_for_timeout(300)
        page.wait_for_selector(IDLE, timeout=90_000)
        expect(page.get_by_role("radio", name="PT vs LAMP (the paper's Figure 6)")).to_be_checked()
        expect(page.get_by_role("radio", name="t-SNE (keeps neighbourhoods)")).to_be_checked()
        picture = page.locator(CHART).first
        expect(picture).to_contain_text("one t-SNE fit over both runs", timeout=30_000)
        text = picture.inner_text()
        assert text.count("t-SNE 1") == text.count("t-SNE 2") == 1
        assert "before: PT" in text and "after: LAMP" in text
        blue = picture.locator("path[fill='#1f77b4']")
        red = picture.locator("path[fill='#d62728']")
        assert blue.count() >= 8 and red.count() >= 4  # PT's 8 tokens, LAMP's 4 pooled ones (and legend symbols)
        caption = (f"tiny-t5 / sst2, after training: PT run #{ids['pt']}'s 8 prompt tokens (blue, before) and LAMP "
                   f"run #{ids['lamp']}'s 4 tokens of the pooled prompt P'")
        expect(page.get_by_text(caption)).to_be_visible()
        browser.close()
