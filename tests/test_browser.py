"""The dashboard in a real browser: Debian's Chromium through Playwright, `streamlit run` and a `lamp worker`.

Launches a tiny-t5 run from the form, watches it succeed, asks the trained prompt for a prediction, compares it
with a second run, opens Dispersion and downloads the prompt file. Screenshots of each view go to
tests/artifacts/ (the current ones are copied to docs/ for the README).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, ROOT, launch_browser, settle, streamlit_app
from redis import Redis

from store.db import dispose, session_scope
from store.models import Run

DATA = (ROOT.parent / "shared" / "data").resolve()
ARTIFACTS = ROOT / "tests" / "artifacts"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`"),
    pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} is missing"),
    pytest.mark.timeout(240),
]


def seed_pt_run(home: Path) -> int:
    """A finished PT run with real-looking files, the second run of the comparison (not trained here)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    config = {"model": "tiny-t5", "task": "sst2", "method": {"method": "pt", "length": 4},
              "train": {"steps": 2, "seed": 42}, "data": {}}
    with session_scope() as session:
        run = Run(config=config, method="pt", model="tiny-t5", task="sst2", status="succeeded", progress=1.0,
                  step=2, total_steps=2, trainable_params=256, prompt_tokens=4, hidden_size=64,
                  train_seconds=3.0, step_seconds_median=0.4, peak_memory_mb=300.0, metrics={"accuracy": 50.0},
                  main_metric="accuracy", main_metric_value=50.0, artifact_dir="runs/1")
        session.add(run)
        session.flush()
        folder = home / "runs" / str(run.id)
        folder.mkdir(parents=True)
        save_file({"prompt": np.zeros((4, 64), dtype=np.float32)}, str(folder / "prompt.safetensors"))
        before = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
        save_file({"before.prompt": before, "after.prompt": 1.1 * before}, str(folder / "tokens.safetensors"))
        (folder / "dispersion.json").write_text(json.dumps({"prompt": {
            "before": {"mean_pairwise_distance": 1.0, "covariance_trace": 1.0},
            "after": {"mean_pairwise_distance": 1.1, "covariance_trace": 1.2}}}))
        return run.id


@pytest.fixture()
def stack(tmp_path, monkeypatch, redis_url):
    """A store with one finished PT run, a worker and the dashboard, on private LAMP_HOME and Redis DB."""
    home = tmp_path / "home"
    env = {**os.environ, "LAMP_HOME": str(home), "DATABASE_URL": f"sqlite:///{tmp_path / 'lamp.db'}",
           "REDIS_URL": redis_url, "LAMP_DATA_DIR": str(DATA)}
    for key in ("LAMP_HOME", "DATABASE_URL", "REDIS_URL"):
        monkeypatch.setenv(key, env[key])
    redis = Redis.from_url(redis_url)
    pt_id = seed_pt_run(home)
    log = open(tmp_path / "stack.log", "w")  # noqa: SIM115 - closed after the children stop
    worker = subprocess.Popen([sys.executable, "-m", "lamp_cli", "worker"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        with streamlit_app(env, log) as url:
            yield url, pt_id
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        redis.flushdb()
        dispose(env["DATABASE_URL"])


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def choose(page, label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox by its label and the option's text."""
    box = page.get_by_label(label, exact=True)
    box.click()
    if box.get_attribute("aria-expanded") != "true":  # after a Launch the first click only takes the focus back
        box.click()
    page.get_by_role("option", name=option).click()
    settle(page)


def wait_until_succeeded(page, address: str) -> None:
    """Reload a run's page until the run has succeeded (a failure shows its error instead)."""
    page.goto(address)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        settle(page)
        if page.get_by_text("✔ succeeded").count():
            return
        assert not page.get_by_text("✖ failed").count(), page.inner_text("body")
        page.wait_for_timeout(2000)
        page.reload()
    raise AssertionError(f"{address}: not succeeded within 150 s")


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    settle(page)


@pytest.mark.slow
def test_launch_watch_compare_disperse_and_download(stack, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    from safetensors.numpy import load_file

    url, pt_id = stack
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)

        page.goto(f"{url}/launch")
        settle(page)
        choose(page, "model", "tiny-t5: a random 2-layer T5 for tests of the seq2seq path; its accuracy means nothing")
        for label, value in (("length", 4), ("rank", 2), ("batch size", 2),
                             ("steps (empty: use epochs)", 2), ("max eval examples (empty: all)", 4)):
            set_number(page, label, value)
        expect(page.get_by_test_id("stMetricValue").first).to_have_text("138")  # 4*2 + 2 + 2*64 on tiny-t5
        shoot(page, "launch")
        page.get_by_role("button", name="Launch", exact=True).click()
        expect(page.get_by_text("Queued 1 run: #2")).to_be_visible(timeout=30_000)

        choose(page, "method", "lora: LoRA (Hu et al., 2022), through PEFT")  # the form keeps the run's other values
        expect(page.get_by_test_id("stMetricValue").first).to_have_text("12,288")  # q, v of 6 attentions, r = 8
        page.get_by_role("button", name="Launch", exact=True).click()
        expect(page.get_by_text("Queued 1 run: #3")).to_be_visible(timeout=30_000)
        for run_id in (2, 3):
            wait_until_succeeded(page, f"{url}/run?id={run_id}")

        page.goto(url)  # Runs, the default page
        settle(page)
        expect(page.get_by_text("Act on a run")).to_be_visible()
        shoot(page, "runs")
        page.goto(f"{url}/run?id=2")
        settle(page)

        if importlib.util.find_spec("lamp_engine.predict"):  # the engine's predict() may land after this test
            page.get_by_label("a sentence for the trained prompt").fill("a gripping , funny film")
            page.get_by_label("a sentence for the trained prompt").press("Enter")
            settle(page)
            page.get_by_role("button", name="Predict").click()
            expect(page.get_by_text("Prediction:")).to_be_visible(timeout=60_000)
        shoot(page, "run")

        with page.expect_download() as download_info:
            page.get_by_role("button", name="prompt (safetensors)").click()
        saved = tmp_path / "prompt.safetensors"
        download_info.value.save_as(saved)
        tensors = load_file(str(saved))
        assert "prompt" in tensors and tensors["prompt"].shape[1] == 64

        page.goto(f"{url}/compare?runs=2,3,{pt_id}&ref={pt_id}")
        settle(page)
        expect(page.get_by_text("Results and costs")).to_be_visible()
        expect(page.get_by_text("#3 lora · sst2").first).to_be_visible()  # LoRA next to LAMP and PT
        expect(page.get_by_text("Curves", exact=True)).to_be_visible()
        shoot(page, "compare")

        page.goto(f"{url}/dispersion?runs=2,{pt_id}")
        settle(page)
        expect(page.get_by_text("Dispersion figures")).to_be_visible()
        page.wait_for_timeout(1500)  # let Vega draw the charts before the screenshot
        picture = page.locator("[data-testid='stVegaLiteChart']").first
        expect(picture).to_contain_text("one PCA fit over all runs (shared axes)")
        text = picture.inner_text()
        assert text.count("PCA 1") == text.count("PCA 2") == 1  # one pair of axes: every run on the same one
        expect(picture).to_contain_text("#2 lamp · sst2")
        expect(picture).to_contain_text(f"#{pt_id} pt · sst2")
        shoot(page, "dispersion")
        browser.close()
    docs = ROOT / "docs"
    if os.environ.get("LAMP_UPDATE_SCREENSHOTS"):
        for name in ("launch", "runs", "run", "compare", "dispersion"):
            shutil.copy(ARTIFACTS / f"{name}.png", docs / f"dashboard-{name}.png")
