"""A run that did not learn says so in one line with what to try: in its result, the store, `lamp status`."""

import subprocess
import sys
from pathlib import Path

import pytest

from app.tables import runs_frame
from lamp_engine.config import RunConfig
from lamp_engine.health import learning_note, majority_rate
from lamp_engine.train import train
from store.db import session_scope
from store.queries import get_run
from worker import queue
from worker.jobs import run_training

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()


def test_a_loss_that_does_not_fall_is_flagged_and_one_that_falls_is_not():
    flat = [2.0, 2.1, 1.9, 2.0, 2.0, 2.05, 2.0, 2.1, 1.95, 2.02]
    falling = [2.0, 1.9, 1.8, 1.7, 1.6, 1.2, 1.0, 0.9, 0.8, 0.7]
    assert learning_note(flat, None, None, "pt", "encoder") == (
        "not learning: training loss did not fall (2.00 over the first 5 steps, 2.02 over the second half); "
        "try another learning rate (--lr) or more steps (--steps)")
    assert learning_note(falling, None, None, "pt", "encoder") is None
    assert learning_note(flat[:9], None, None, "pt", "encoder") is None  # too short to judge


def test_accuracy_at_the_majority_rate_is_flagged_with_lamps_own_advice_on_a_causal_lm():
    assert majority_rate([0, 1, 1, 1]) == 75.0 and majority_rate([]) is None
    note = learning_note([1.0] * 3, 38.0, 37.6, "lamp", "causal")
    assert note == ("not learning: best selection accuracy 38.0 % is not above the majority-class rate (37.6 %); "
                    "LAMP on a small causal LM: try PT, or a higher rank (--rank 16) and --lr 0.005")
    assert learning_note([1.0] * 3, 40.0, 37.6, "lamp", "causal") is None


def lamp_run(tmp_path: Path, model: str, lr: float, steps: int):
    config = RunConfig.from_flat({"model": model, "task": "sst2", "method": "lamp", "length": 8, "rank": 2, "pool": 2,
                                  "lr": lr, "steps": steps, "batch_size": 8, "max_eval_examples": 100,
                                  "data_dir": str(DATA_DIR)})
    return train(config, tmp_path / model)


@pytest.mark.slow
def test_a_lamp_run_whose_loss_does_not_fall_is_flagged_and_one_that_learns_is_not(tmp_path, caplog):
    stuck = lamp_run(tmp_path, "tiny-t5", 1e-8, 12)
    assert stuck.health.startswith("not learning: training loss did not fall (")
    assert "is not above the majority-class rate (55.0 %)" in stuck.health
    assert caplog.records[-1].getMessage() == stuck.health
    learning = lamp_run(tmp_path, "minilm-l6", 0.01, 40)
    assert learning.health is None and learning.best_metrics["accuracy"] > 60
    assert '"health": null' in (tmp_path / "minilm-l6" / "result.json").read_text()


def test_the_store_the_runs_view_and_lamp_status_show_the_note(lamp_home, redis_url):
    config = RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "method": "lamp", "length": 4, "rank": 2,
                                  "lr": 1e-8, "steps": 10, "batch_size": 2, "max_eval_examples": 20,
                                  "data_dir": str(DATA_DIR)})
    run_id = queue.submit_run(config)
    assert run_training(run_id)["status"] == "succeeded"
    with session_scope() as session:
        record = get_run(session, run_id).to_dict()
    assert record["health"].startswith("not learning: ") and "majority-class rate (50.0 %)" in record["health"]
    assert runs_frame([record])["note"].tolist() == [record["health"]]
    status = subprocess.run([sys.executable, "-m", "lamp_cli", "status", str(run_id)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert f"health: {record['health']}" in status.stdout
    runs = subprocess.run([sys.executable, "-m", "lamp_cli", "runs"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert record["health"] in runs.stdout.splitlines()[2]
