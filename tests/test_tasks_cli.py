"""`lamp tasks`: the listing, one task's details, and clear errors with exit code 2."""

import subprocess
from pathlib import Path

import pytest

from lamp_engine.config import default_data_dir
from lamp_engine.tasks import TASKS
from lamp_engine.tasks.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"benchmark data folder {DATA} not present")


@needs_data
def test_listing_shows_every_task_its_metrics_and_row_counts(capsys):
    assert main(["tasks", "--data-dir", str(DATA)]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert set(TASKS) | {"task", "custom"} <= set(lines)
    assert "accuracy, macro_f1" in lines["cb"] and "val.jsonl 56" in lines["cb"] and "train.jsonl 250" in lines["cb"]
    assert "f1a, em" in lines["multirc"] and "val.jsonl 83" in lines["multirc"]
    assert "f1, em" in lines["record"] and "dev32.jsonl 32" in lines["record"]
    assert "dev.txt 872" in lines["sst2"] and "nyu-mll/glue:sst2" in lines["sst2"]
    assert "boolq" in lines and "val.jsonl 3270" in lines["boolq"]
    assert lines["mnli"].split()[2] == "-"  # no local MNLI files here
    assert out.startswith(f"Sources: data folder {DATA}")


@needs_data
def test_one_task_shows_its_policy_and_an_example(capsys):
    assert main(["tasks", "--data-dir", str(DATA), "--task", "copa", "--k-shot", "8"]) == 0
    out = capsys.readouterr().out
    assert "metrics: accuracy (main: accuracy)" in out
    assert "train: superglue/COPA/train32.jsonl (8 examples)" in out
    assert "test: superglue/COPA/val.jsonl (100 examples)" in out
    assert "target: Water flowed from the spout." in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--task", "nope"], "lamp tasks: task: unknown task 'nope'"),
    (["--data-dir", "/nonexistent"], "lamp tasks: data folder /nonexistent does not exist"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(["tasks", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_missing_source_through_the_console_command(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "lamp"), "tasks", "--data-dir", str(tmp_path),
                             "--task", "boolq"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("lamp tasks: task boolq: no data source available")
    assert "Traceback" not in result.stderr and "aps/super_glue:boolq" in result.stderr


def test_default_data_dir_is_the_engines_one_whatever_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    chosen = build_parser().parse_args([]).data_dir
    assert chosen == default_data_dir()
    # compared resolved: ../shared may be a symbolic link (DATA is resolved, the engine's path need not be)
    assert (Path(chosen).resolve() if chosen else None) == (DATA if DATA.is_dir() else None)
    monkeypatch.setenv("LAMP_DATA_DIR", "/elsewhere")
    assert build_parser().parse_args([]).data_dir == "/elsewhere"


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["tasks", "--help"])
    assert ended.value.code == 0 and "--data-dir" in capsys.readouterr().out
