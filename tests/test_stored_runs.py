"""Stored runs survive upgrades: a run of release 0.1 that used every LAMP option this release retired (factor_lr,
prompt_scale, pool_init, residual, init_vocabulary) reads, predicts, resumes and retries, with one warning naming the
retired settings; a new submission that names one is still refused in one line.

tests/fixtures/run-0.1-lamp-every-option is that run's folder as 0.1 wrote it (`lamp train --model tiny-t5 --task
sst2 --method lamp --length 8 --rank 2 --pool 2 --factor-lr scaled --prompt-scale matched --pool-init blocks
--residual frozen --init-vocabulary words --steps 3 --batch-size 2 --max-eval-examples 8`, at commit 5c30870), with
predictions-0.1.json holding what 0.1's `predict` gave on two sentences.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import update

from lamp_common.result import RunResult
from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError
from lamp_engine.export import load_prompt
from lamp_engine.methods import RETIRED_SETTINGS, LampConfig
from lamp_engine.predict import predict
from store.accounts import Actor
from store.db import session_scope
from store.models import Run
from store.queries import get_run
from worker import queue
from worker.jobs import run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
ADMIN = Actor("tester", admin=True)  # the queue's actions take the acting user
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()
FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1-lamp-every-option"
RETIRED = ["init_vocabulary", "factor_lr", "prompt_scale", "pool_init", "residual"]  # in the order 0.1 wrote them


def stored_config() -> dict:
    config = json.loads((FIXTURE / "result.json").read_text())["config"]
    config["data"]["data_dir"] = str(DATA_DIR)  # where this checkout's task files are (0.1 ran elsewhere)
    return config


def old_run(tmp_path: Path) -> Path:
    folder = tmp_path / "old-run"
    shutil.copytree(FIXTURE, folder)
    result = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**result, "config": stored_config()}))
    return folder


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_the_fixture_holds_every_retired_option_with_a_value_other_than_its_default():
    method = stored_config()["method"]
    assert [key for key in method if key in RETIRED_SETTINGS] == RETIRED
    assert (method["factor_lr"], method["residual"], method["pool_init"]) == ("scaled", "frozen", "blocks")


def test_a_stored_config_reads_with_one_warning_naming_the_retired_settings(caplog):
    with caplog.at_level(logging.WARNING):
        config = RunConfig.from_stored(stored_config(), "run 7")
    assert type(config.method) is LampConfig
    assert (config.method.length, config.method.rank, config.method.pool, config.train.lr) == (8, 2, 2, 0.3)
    [warning] = warnings_of(caplog)
    assert warning.startswith(f"run 7 has settings this release retired: {', '.join(RETIRED)};")
    assert "\n" not in warning and "bench/ablations.py" in warning


def test_a_new_submission_naming_a_retired_setting_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^init_vocabulary: retired \(the initial prompt is drawn .*\); drop it$"):
        RunConfig.from_dict(stored_config())
    with pytest.raises(ConfigError, match=r"^residual: retired \(a research option of LAMP's .*\); drop it$"):
        RunConfig.from_flat({"method": "lamp", "residual": "frozen"})
    cli = subprocess.run([sys.executable, "-m", "lamp_cli", "train", "--method", "lamp", "--factor-lr", "scaled"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1 and "--factor-lr" in cli.stderr


def test_a_stored_run_predicts_what_it_predicted_before_the_upgrade(tmp_path, caplog):
    before = json.loads((FIXTURE / "predictions-0.1.json").read_text())
    with caplog.at_level(logging.WARNING):
        after = predict(old_run(tmp_path), [row["text"] for row in before])
    assert [row["prediction"] for row in after] == [row["prediction"] for row in before]
    for new, old in zip(after, before, strict=True):
        assert new["scores"] == pytest.approx(old["scores"], abs=1e-4)  # the prompt it trained, residual included
    assert len(warnings_of(caplog)) == 1


@pytest.mark.slow
def test_a_stored_run_resumes_as_todays_lamp(tmp_path):
    folder = old_run(tmp_path)
    resumed = subprocess.run([sys.executable, "-m", "lamp_cli", "train", "--resume", str(folder), "--steps", "5",
                              "--quiet"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"the run in {folder} has settings this release retired: {', '.join(RETIRED)}" in resumed.stderr
    assert "the saved state has" not in resumed.stderr  # today's LAMP keeps a frozen R too: the run's own loads
    assert torch.equal(load_prompt(folder)["params"]["R"], load_prompt(FIXTURE)["params"]["R"])
    assert "parameter groups of [1, 1, 1], which lamp no longer has; its moments start afresh at step 3" in \
        resumed.stderr
    result = RunResult.from_json((folder / "result.json").read_text())
    assert (result.status, result.steps, [p["step"] for p in result.history["train"]]) == \
        ("completed", 5, [1, 2, 3, 4, 5])
    assert [round(p["lr"], 6) for p in result.history["train"][3:]] == [0.06, 0.0]  # the decay to step 5 goes on
    assert not RETIRED_SETTINGS.keys() & result.config["method"].keys()


def store_as_release_0_1(run_id: int, status: str) -> None:
    """The row as 0.1 left it: its config with the retired settings."""
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == run_id).values(config=stored_config(), status=status))


@pytest.mark.slow
def test_a_stored_run_retries_and_the_worker_trains_it(lamp_home, redis_url, caplog):
    base = RunConfig.from_stored(stored_config())
    parent = queue.submit_run(base)
    queue.cancel_run(parent, ADMIN)
    store_as_release_0_1(parent, "failed")
    with caplog.at_level(logging.WARNING):
        child = queue.retry_run(parent, ADMIN)
    assert any(f"run {parent} has settings this release retired" in w for w in warnings_of(caplog))
    with session_scope() as session:
        retried = get_run(session, child)
        assert (retried.parent_id, retried.status) == (parent, "queued")
        assert not RETIRED_SETTINGS.keys() & retried.config["method"].keys()
        assert retried.config["method"] == {k: v for k, v in stored_config()["method"].items()
                                            if k not in RETIRED_SETTINGS}
    store_as_release_0_1(child, "queued")  # a worker of this release takes a job queued by 0.1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_training(child) == {"run_id": child, "status": "succeeded"}
    assert any(f"run {child} has settings this release retired" in w for w in warnings_of(caplog))
