"""`lamp train` from the shell: bad input ends in one line and exit code 2, and leaves no run folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lamp_engine.dispersion import dispersion, dispersion_figures

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
LAMP = [sys.executable, "-c", "import sys, lamp_cli; sys.exit(lamp_cli.main())"]


def lamp(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*LAMP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (["--pool", "3"], "lamp train: error: pool: prompt length 100 is not divisible by pool size 3"),
    (["--length", "30"], "lamp train: error: pool: prompt length 30 is not divisible by pool size 4; use a length "
                         "that is a multiple of 4, or pool 1 (no pooling)"),  # the default pool
    (["--rank", "0"], "lamp train: error: rank: must be positive, got 0"),
    (["--lr", "-1"], "lamp train: error: lr: must be positive, got -1.0"),
    (["--method", "lora"], "lamp train: error: method: unknown method 'lora'"),
    (["--length", "10", "--rank", "12"], "lamp train: error: rank: rank 12 exceeds the prompt length 10"),
    (["--rank", "80"], "lamp train: error: rank: rank 80 exceeds min(length 100, hidden size 64)"),
    (["--model", "no-such-model"], "lamp train: error: model: 'no-such-model' is not a model alias"),
    (["--data-dir", "/nonexistent"], "lamp train: error: task sst2: no data source available"),
    (["--steps", "many"], "lamp train: error: argument --steps: invalid int value: 'many'"),
])
def test_bad_input_is_one_line_exit_2_and_no_folder(tmp_path, args, message):
    run = lamp("train", "--model", "tiny-t5", "--data-dir", str(DATA), "--output", str(tmp_path / "run"), *args,
               cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(message) and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_train_then_resume_from_the_shell(tmp_path):
    first = lamp("train", "--model", "tiny-t5", "--task", "cb", "--data-dir", str(DATA), "--steps", "2",
                 "--batch-size", "2", "--length", "4", "--rank", "2", "--max-eval-examples", "4",
                 "--output", str(tmp_path / "run"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("completed: lamp on tiny-t5 / cb: accuracy")
    again = lamp("train", "--output", str(tmp_path / "run"), cwd=tmp_path)
    assert again.returncode == 2 and "already exists; pass --resume" in again.stderr
    resumed = lamp("train", "--resume", str(tmp_path / "run"), "--steps", "4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["steps"] == 4 and result["config"]["train"]["steps"] == 4 and result["task"] == "cb"


def test_dispersion_figures_on_a_hand_worked_case():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    figures = dispersion_figures(points)
    assert figures["mean_pairwise_distance"] == pytest.approx(5.0)
    assert figures["covariance_trace"] == pytest.approx(4.5 + 8.0)  # unbiased variances of x and y


def test_projections_share_one_space_for_before_and_after():
    before = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
    out = dispersion(before, before * 3)
    assert len(out["pca"]["before"]) == len(out["pca"]["after"]) == 12 and len(out["tsne"]["after"][0]) == 2
    assert out["figure"]["after"]["mean_pairwise_distance"] == pytest.approx(
        3 * out["figure"]["before"]["mean_pairwise_distance"], rel=1e-5)
    joint = torch.tensor(out["pca"]["before"] + out["pca"]["after"])
    torch.testing.assert_close(joint.mean(dim=0), torch.zeros(2), atol=1e-4, rtol=0)  # one joint centring
