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
    (["--method", "prefix"], "lamp train: error: method: unknown method 'prefix'"),
    (["--length", "10", "--rank", "12"], "lamp train: error: rank: rank 12 exceeds the prompt length 10"),
    (["--rank", "80"], "lamp train: error: rank: rank 80 exceeds min(length 100, hidden size 64)"),
    (["--model", "no-such-model"], "lamp train: error: model: 'no-such-model' is not a model alias"),
    (["--data-dir", "/nonexistent"], "lamp train: error: task sst2: no data source available"),
    (["--steps", "many"], "lamp train: error: argument --steps: invalid int value: 'many'"),
    (["--verbalizers", "0=a,1=b"], "lamp train: error: verbalizers: applies to the custom task only (--task custom"),
    (["--bottleneck", "10"], "lamp train: error: bottleneck: applies to dpt, residual only, not to lamp"),
    (["--method", "pt", "--q-init", "paper"], "lamp train: error: q_init: applies to lamp only, not to pt"),
    (["--warmup-ratio", "0.1", "--warmup-steps", "5"],
     "lamp train: error: warmup_ratio: give --warmup-ratio or --warmup-steps, not both"),
    (["--warmup-ratio", "1.5"], "lamp train: error: warmup_ratio: must be in [0, 1), got 1.5"),
    (["--backbone-dropout", "yes"], "lamp train: error: backbone_dropout: must be one of off, on, got 'yes'"),
    (["--select-on", "test"], "lamp train: error: select_on: must be one of heldout, validation, got 'test'"),
])
def test_bad_input_is_one_line_exit_2_and_no_folder(tmp_path, args, message):
    run = lamp("train", "--model", "tiny-t5", "--data-dir", str(DATA), "--output", str(tmp_path / "run"), *args,
               cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(message) and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
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


def test_dispersion_figures_of_each_kept_matrix_before_and_after():
    before = torch.randn(12, 16, generator=torch.Generator().manual_seed(0))
    out = dispersion({"prompt": before, "unpooled": before}, {"prompt": before * 3, "unpooled": before * 2})
    assert set(out) == {"prompt", "unpooled"}
    assert out["prompt"]["after"]["mean_pairwise_distance"] == pytest.approx(
        3 * out["prompt"]["before"]["mean_pairwise_distance"], rel=1e-5)
    assert out["unpooled"]["after"]["covariance_trace"] == pytest.approx(
        4 * out["unpooled"]["before"]["covariance_trace"], rel=1e-5)


def test_a_binary_file_given_as_the_csv_is_one_line(tmp_path):
    binary = tmp_path / "photo.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    run = lamp("train", "--model", "tiny-t5", "--task", "custom", "--train-file", str(binary), "--output",
               str(tmp_path / "run"), cwd=tmp_path)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert run.stderr.startswith(f"lamp train: error: {binary}: not a UTF-8 text file (undecodable byte at offset "
                                 "128); give a CSV or JSONL file saved as UTF-8")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["tasks", "--data-dir", str(DATA)], ["runs"]])
def test_output_to_a_reader_that_left_ends_quietly(tmp_path, command):
    """`lamp tasks | head -1`: once the reader has gone, writing fails; no BrokenPipeError traceback follows.

    The pipe's read end is closed before the command starts, so every write fails, as the writes after `head`
    exits do (a real `| head` races: short output may fit in the pipe before head leaves).
    """
    read, write = os.pipe()
    os.close(read)
    try:
        run = subprocess.run([*LAMP, *command], cwd=tmp_path, stdout=write, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "LAMP_HOME": str(tmp_path / "home")},
                             timeout=120)
    finally:
        os.close(write)
    assert run.stderr == "" and run.returncode == 141  # 128 + SIGPIPE, what a shell reports for a closed pipe


def test_the_paper_protocol_sets_the_papers_training_and_flags_override_it():
    from lamp_engine.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--protocol", "paper", "--epochs", "3", "--patience", "2"]))
    assert (config.train.epochs, config.train.lr, config.train.weight_decay, config.train.batch_size,
            config.train.max_source_length, config.train.eval_every, config.train.patience) == (
        3.0, 0.3, 1e-5, 16, 256, "epoch", 2)
    assert (config.train.warmup_ratio, config.train.warmup_steps, config.train.backbone_dropout,
            config.data.select_on) == (0.1, 0, "on", "validation")  # DPT's code, which the paper follows
    assert (config.method.length, config.method.rank, config.method.q_init, config.method.pool) == (
        100, 8, "paper", 4)  # Q = S as the paper writes it; p, which the paper leaves open, our default
    assert config.train.schedule(1600).warmup_steps == 30  # a tenth of 3 epochs x 100 steps
    pt = config_from_args(build_parser().parse_args(["--protocol", "paper", "--method", "pt"]))
    assert pt.method.length == 100 and pt.data.select_on == "validation"  # LAMP's Q = S does not reach PT
    steps = config_from_args(build_parser().parse_args(["--protocol", "paper", "--warmup-steps", "7"]))
    assert (steps.train.warmup_steps, steps.train.warmup_ratio) == (7, None)  # a warm-up in steps replaces it
