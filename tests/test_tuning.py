"""The learning-rate search (issue 35): the grid of each method family, the choice on the selection split only,
and on the tiny model a search that never reads the reported set and finals that carry the chosen rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.table import TableRun, markdown, run_table
from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError
from lamp_engine.methods import LR_GRIDS, MethodFamily
from lamp_engine.train import train
from lamp_engine.tuning import choose_lr, final_configs, search_configs, seed_groups, tuned_label

TINY = {"model": "tiny-t5", "method": "lamp", "length": 4, "rank": 2, "pool": 1, "steps": 2, "batch_size": 2,
        "max_source_length": 32, "eval_batch_size": 8, "device": "cpu"}
WORDS = ("good", "fine", "great", "bad", "awful", "poor")


def write_rows(path: Path, count: int) -> Path:
    lines = ["text,label"] + [f"a {WORDS[i % 6]} film number {i},{'pos' if i % 6 < 3 else 'neg'}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def custom_config(tmp_path: Path, **overrides) -> RunConfig:
    """The tiny model on a user's files; the reported file is one whose reading fails (no such columns)."""
    reported = tmp_path / "reported.csv"
    reported.write_text("nothing,here\n1,2\n")
    return RunConfig.from_flat({**TINY, "task": "custom", "train_file": str(write_rows(tmp_path / "train.csv", 40)),
                                "eval_file": str(reported), **overrides})


def test_each_family_searches_its_own_grid_and_the_search_selects_on_held_out_data():
    lamp = RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "method": "lamp", "seed": 3})
    lora = RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "method": "lora"})
    full = RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "method": "full"})
    assert [c.train.lr for c in search_configs(lamp)] == [0.003, 0.01, 0.03, 0.3]
    assert [c.train.lr for c in search_configs(lora)] == list(LR_GRIDS[MethodFamily.WEIGHT_ADAPTER])
    assert [c.train.lr for c in search_configs(full)] == [1e-5, 3e-5, 1e-4]
    assert {(c.data.selection_only, c.train.seed) for c in search_configs(lamp)} == {(True, 3)}
    with pytest.raises(ConfigError, match="selects on a split held out of training"):
        search_configs(RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "select_on": "validation"}))
    with pytest.raises(ConfigError, match="selection_only: a selection-only run selects on a split held out"):
        RunConfig.from_flat({"model": "minilm-l6", "task": "sst2", "select_on": "validation", "selection_only": True})


def test_the_choice_is_the_best_selection_score_and_the_finals_carry_it():
    choice = choose_lr({0.003: 71.0, 0.01: 80.5, 0.03: 80.5, 0.3: None}, "accuracy")
    assert (choice.lr, choice.scores) == (0.01, {0.003: 71.0, 0.01: 80.5, 0.03: 80.5})  # a tie: the lower rate
    assert choice.label() == "lr 1e-2, tuned over 3" and tuned_label(3e-4, 4) == "lr 3e-4, tuned over 4"
    with pytest.raises(ConfigError, match="no point of the learning-rate search finished"):
        choose_lr({0.01: None}, "accuracy")
    point = search_configs(RunConfig.from_flat({"model": "minilm-l6", "task": "cb", "method": "pt", "seed": 1}))[0]
    finals = final_configs(point, choice, [1, 2, 3])
    assert [(c.train.lr, c.train.seed, c.data.selection_only) for c in finals] == [(0.01, s, False) for s in (1, 2, 3)]
    sweep = [RunConfig.from_flat({"model": "minilm-l6", "task": t, "method": "pt", "seed": s})
             for t in ("cb", "rte") for s in (1, 2)]
    assert [[(c.task, c.train.seed) for c in g] for g in seed_groups(sweep)] == [[("cb", 1), ("cb", 2)],
                                                                                 [("rte", 1), ("rte", 2)]]


@pytest.mark.slow
def test_a_selection_only_run_never_reads_the_reported_set(tmp_path):
    with pytest.raises(Exception, match="column"):  # the reported file cannot be read: a final run fails on it
        train(custom_config(tmp_path), tmp_path / "final")
    result = train(custom_config(tmp_path, selection_only=True), tmp_path / "point")
    assert result.status == "completed" and result.metrics == {} and result.examples["test"] == 0
    assert set(result.best_metrics) >= {"accuracy"}
    assert result.split_policy["test"].endswith("reported.csv: not read (--selection-only) (0 examples)")


@pytest.mark.slow
def test_the_tuned_table_picks_the_best_selection_score_and_its_finals_carry_the_rate(tmp_path):
    """The reported file stays unreadable through the whole search and becomes readable only after its last
    point: a search that read it would fail, and the finals score on it."""
    config = custom_config(tmp_path, seed=1)
    runs = [TableRun("main", "lamp", "tiny-t5 / custom", 1, config)]
    searched = []

    def log(line: str) -> None:
        if "search:" in line:
            searched.append(line)
        if len(searched) == len(LR_GRIDS[MethodFamily.SOFT_PROMPT]) and "final:" not in line:
            write_rows(tmp_path / "reported.csv", 12)  # the search is over: the finals may read it

    report = run_table(runs, tmp_path / "work", log=log, tune_lr=True)
    scores = {point["lr"]: point["selection_score"] for point in report["lr_search"]}
    assert list(scores) == [0.003, 0.01, 0.03, 0.3]
    assert [line.split("selection accuracy ")[1].split(" (")[0] for line in searched] == \
        [f"{scores[lr]:.1f}" for lr in scores]  # one decimal, as the tables give it
    best = max(sorted(scores), key=lambda lr: scores[lr])
    (final,) = report["runs"]
    assert final["lr"] == best and final["tuning"]["chosen_lr"] == best and len(final["tuning"]["grid"]) == 4
    assert final["metrics"] and final["selected_on"] == "heldout"
    table = markdown(report)
    assert f"({tuned_label(best, 4)})" in table
    assert "| lamp | tiny-t5 / custom | " + " | ".join(f"{scores[lr]:.1f}" for lr in scores) + " |" in table
