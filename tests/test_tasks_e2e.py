"""Tasks end to end: `lamp train` on the offline tiny-t5 model for CB and for a user's CSV file, and the
structured tasks (COPA's choice texts, MultiRC's grouped answers, ReCoRD's entities) through the training loop."""

import json
import subprocess
from pathlib import Path

import pytest

from lamp_engine.config import RunConfig
from lamp_engine.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
LAMP = ROOT / ".venv" / "bin" / "lamp"
TINY = ["--model", "tiny-t5", "--steps", "2", "--batch-size", "2", "--length", "4", "--rank", "2",
        "--max-eval-examples", "4", "--quiet"]
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} not present")


def lamp_train(tmp_path: Path, *flags: str) -> dict:
    output = tmp_path / "run"
    result = subprocess.run([str(LAMP), "train", *TINY, *flags, "--output", str(output)], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("completed: lamp on tiny-t5")
    return json.loads((output / "result.json").read_text())


@pytest.mark.slow
@needs_data
def test_lamp_train_on_cb_records_metrics_and_split_policy(tmp_path):
    result = lamp_train(tmp_path, "--task", "cb", "--data-dir", str(DATA))
    assert set(result["metrics"]) == {"accuracy", "macro_f1"} and result["main_metric"] == "accuracy"
    assert all(0.0 <= value <= 100.0 for value in result["metrics"].values())
    policy = result["split_policy"]
    assert policy["source"] == f"local folder {DATA}"
    assert policy["train"] == "superglue/CB/train.jsonl less the selection hold-out (225 examples)"
    assert policy["test"] == "superglue/CB/val.jsonl (56 examples)"


@pytest.mark.slow
def test_lamp_train_on_a_custom_csv_file(tmp_path):
    train_file = tmp_path / "reviews.csv"
    rows = [f"\"a {'wonderful' if i % 2 else 'dreadful'} film, number {i}\",{i % 2}" for i in range(30)]
    train_file.write_text("review,stars\n" + "\n".join(rows) + "\n")
    result = lamp_train(tmp_path, "--task", "custom", "--train-file", str(train_file), "--text-column", "review",
                        "--label-column", "stars", "--verbalizers", "0=negative,1=positive")
    assert set(result["metrics"]) == {"accuracy", "macro_f1"}
    policy = result["split_policy"]
    assert policy["verbalizers"] == "0=negative, 1=positive"
    assert policy["test"] == f"held out of {train_file} (seed 43) (3 examples)"
    assert policy["select"] == f"held out of {train_file} (seed 42) (2 examples)"
    assert result["config"]["data"]["train_file"] == str(train_file)


def test_lamp_train_custom_with_a_bad_label_fails_in_one_line(tmp_path):
    train_file = tmp_path / "t.csv"
    train_file.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(6)) + "odd,5\n")
    result = subprocess.run([str(LAMP), "train", *TINY, "--task", "custom", "--train-file", str(train_file),
                             "--verbalizers", "0=no,1=yes", "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert result.stderr == (f"lamp train: error: {train_file}, line 8: label 5 is not one of 0, 1 (from "
                             "--verbalizers); fix the row or extend --verbalizers\n")
    assert not (tmp_path / "run").exists()


@needs_data
@pytest.mark.parametrize("task", ["copa", "multirc", "record"])
def test_structured_tasks_train_through_the_engine(tmp_path, task):
    from lamp_engine.train import train

    config = RunConfig.from_flat({"model": "tiny-t5", "task": task, "data_dir": str(DATA), "steps": 2,
                                  "batch_size": 2, "length": 4, "rank": 2, "max_eval_examples": 6})
    result = train(config, tmp_path / "run")
    assert result.status == "completed"
    assert set(result.metrics) == set(get_task(task).metrics)
    assert result.split_policy["source"] == f"local folder {DATA}"
