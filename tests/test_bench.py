"""Each benchmark runs end to end on a tiny model for a step or two, so the scripts cannot rot.

The numbers mean nothing at this size; the tests check that every variant and every cell is measured and that
bad input ends in one line with exit code 2.
"""

import json
from pathlib import Path

import pytest

from bench.cli import main, report_file
from bench.speed import ALL_VARIANTS, COMPILED

DATA = (Path(__file__).resolve().parents[2] / "shared" / "data").resolve()
NUMBERS = ("step_seconds_median", "eval_examples_per_second", "peak_memory_mb")


def speed(tmp_path: Path, *flags: str) -> dict:
    out = tmp_path / "speed"
    assert main(["bench", "speed", "--random-init", "--rounds", "1", "--warmup-rounds", "0", "--steps", "1",
                 "--batch-size", "2", "--source-length", "8", "--length", "4", "--rank", "2",
                 "--output", str(out), *flags]) == 0
    assert out.with_suffix(".md").read_text().count("\n| ") >= 2
    return json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow
def test_speed_measures_every_variant_on_a_tiny_llama(tmp_path):
    report = speed(tmp_path, "--shape", "tiny-llama")
    variants = report["variants"]
    assert set(variants) == set(ALL_VARIANTS)
    for name, numbers in variants.items():
        assert all(numbers[key] > 0 for key in NUMBERS), name
        assert numbers["step_memory_mb"] >= 0
    assert variants["peft_pt"]["step_vs_peft_pt"] == 1.0
    assert variants["pt"]["trainable_params"] == variants["peft_pt"]["trainable_params"] == 4 * 64
    assert variants["lamp_p1"]["trainable_params"] == 4 * 2 + 2 + 2 * 64
    assert [variants[f"lamp_p{p}"]["prompt_tokens"] for p in (1, 2, 4)] == [4, 2, 1]
    assert (variants["floor"]["prompt_tokens"], variants["floor"]["trainable_params"]) == (0, 1)
    assert variants["lora"]["trainable_params"] == 2 * 2 * 2 * (64 + 64)  # r (in + out) on q_proj, v_proj, 2 layers
    assert variants["dora"]["trainable_params"] == variants["lora"]["trainable_params"] + 2 * 2 * 64
    assert variants["lora"]["prompt_tokens"] == variants["full"]["prompt_tokens"] == 0
    assert variants["full"]["trainable_params"] > 100 * variants["lora"]["trainable_params"]
    assert report["machine"]["cpus"] >= 1


def test_speed_runs_the_seq2seq_shape(tmp_path):
    report = speed(tmp_path, "--shape", "tiny-t5", "--variants", "lamp_p4,peft_pt")
    assert set(report["variants"]) == {"lamp_p4", "peft_pt"}
    assert report["variants"]["peft_pt"]["trainable_params"] == 4 * 64  # the encoder's prompt only, as ours
    assert all(v[key] > 0 for v in report["variants"].values() for key in NUMBERS)


def test_speed_runs_bf16_weights_on_cpu(tmp_path):
    report = speed(tmp_path, "--shape", "tiny-llama", "--variants", "lamp_p4,peft_pt", "--dtype", "bf16")
    assert report["settings"]["dtype"] == "bf16"
    assert all(v[key] > 0 for v in report["variants"].values() for key in NUMBERS)
    assert "random-init tiny-llama (bfloat16)" in (tmp_path / "speed.md").read_text()


@pytest.mark.slow
def test_speed_compiles_the_frozen_body(tmp_path):
    report = speed(tmp_path, "--shape", "tiny-llama", "--variants", "pt", "--compile")
    assert set(report["variants"]) == {"pt", "pt+compile"} and "pt" in COMPILED
    assert all(report["variants"]["pt+compile"][key] > 0 for key in NUMBERS)


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "cuda"], "no CUDA GPU"),
    (["--shape", "t5-3b"], "--random-init and --shape go together"),
    (["--random-init", "--shape", "gpt5"], "shape: unknown 'gpt5'"),
    (["--variants", "pt,prefix"], "variants: unknown prefix"),
    (["--length", "6"], "length: 6 is not divisible by LAMP's pool size 4"),
])
def test_speed_bad_input_is_one_line(flags, message, capsys):
    import torch

    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    assert main(["bench", "speed", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_table_trains_every_cell_and_reuses_finished_runs(tmp_path):
    out, work = tmp_path / "table", tmp_path / "runs"
    args = ["bench", "table", "--plan", "smoke", "--parts", "main", "--data-dir", str(DATA),
            "--work-dir", str(work), "--output", str(out)]
    assert main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert len(report["runs"]) == 4 and len(list(work.iterdir())) == 4  # 2 methods x 1 task x 2 seeds
    cells = {(c["row"], c["column"]): c for c in report["cells"]}
    assert set(cells) == {("pt", "tiny-t5 / sst2"), ("lamp", "tiny-t5 / sst2")}
    for cell in cells.values():
        values = [r["value"] for r in report["runs"] if r["row"] == cell["row"]]
        assert cell["n"] == 2 and cell["mean"] == pytest.approx(sum(values) / 2)
    assert "| pt |" in out.with_suffix(".md").read_text()
    stamps = {p.name: (p / "result.json").stat().st_mtime for p in work.iterdir()}
    assert main(args) == 0  # a rerun trains nothing again
    assert {p.name: (p / "result.json").stat().st_mtime for p in work.iterdir()} == stamps


def test_the_paper_protocol_plan_puts_each_selection_rule_in_its_own_marked_row():
    from bench.table import aggregate, markdown, plan_runs

    runs = plan_runs("paper-protocol", str(DATA))
    assert len(runs) == 24  # PT and LAMP x CB and RTE x validation and held-out selection x 3 seeds
    lamp = next(r.config for r in runs if r.config.method.name == "lamp" and r.config.data.select_on == "validation")
    assert (lamp.method.q_init, lamp.method.rank, lamp.train.warmup_ratio, lamp.train.backbone_dropout,
            lamp.train.eval_every, lamp.train.lr, lamp.train.batch_size) == ("paper", 8, 0.1, "on", "epoch", 0.01, 16)
    assert {(r.config.task, r.config.train.epochs, r.config.data.max_train_examples) for r in runs} == {
        ("cb", 3.0, 160), ("rte", 3.0, 160)}
    records = [{"part": "main", "row": r.row, "column": r.column, "seed": r.seed, "value": 50.0 + r.seed,
                "selected_on": r.config.data.select_on} for r in runs]
    budget = {"steps": None, "epochs": {"cb": 3.0, "rte": 3.0}, "batch_size": 16, "max_eval_examples": None,
              "max_source_length": 256, "dtype": "bf16", "max_train_examples": 160}
    text = markdown({"via_queue": False, "budgets": {"minilm-l6": budget}, "cells": aggregate(records),
                     "wall_seconds": 60.0})
    assert text.startswith("Budgets: minilm-l6 (bf16): 3 epochs on cb and 3 epochs on rte x batch 16, source <= "
                           "256 tokens, full evaluation sets, <= 160 training examples (a seeded sample).")
    assert "| | selected on | minilm-l6 / cb | minilm-l6 / rte |" in text
    assert "| pt, selected on validation | ⚑ reported set | 52.0 ± 1.0 | 52.0 ± 1.0 |" in text
    assert "| lamp, selected on heldout | held-out split | 52.0 ± 1.0 | 52.0 ± 1.0 |" in text


def test_table_rejects_an_unknown_part(capsys):
    assert main(["bench", "table", "--parts", "main,speed"]) == 2
    assert "parts: unknown speed" in capsys.readouterr().err


def test_table_via_queue_stores_and_queues_every_run(lamp_home, redis_url, tmp_path):
    from bench.table import plan_runs
    from lamp_engine.config import RunConfig
    from store.db import session_scope
    from store.queries import list_runs
    from worker.queue import get_queue

    out = tmp_path / "queued"
    assert main(["bench", "table", "--plan", "smoke", "--parts", "main", "--data-dir", str(DATA),
                 "--via-queue", "--output", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    with session_scope() as session:
        stored = {run.id: (run.status, RunConfig.from_dict(run.config)) for run in list_runs(session)}
    planned = [run.config for run in plan_runs("smoke", str(DATA), ["main"])]
    assert sorted(r["run_id"] for r in report["runs"]) == sorted(stored)
    assert [stored[r["run_id"]] for r in report["runs"]] == [("queued", config) for config in planned]
    assert len(get_queue().job_ids) == len(planned) == 4


@pytest.mark.slow
def test_curve_scores_every_variant_at_the_same_steps_and_reads_the_time_to_accuracy(tmp_path):
    out = tmp_path / "curve"
    assert main(["bench", "curve", "--model", "tiny-t5", "--tasks", "sst2", "--seeds", "1,2", "--steps", "4",
                 "--eval-at", "2,4", "--batch-size", "2", "--max-source-length", "32", "--max-eval-examples", "8",
                 "--variants", "pt,lamp_p4,lamp_p4[factor_lr=scaled,warmup_steps=2]", "--data-dir", str(DATA),
                 "--output", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    curves = report["curves"]["sst2"]
    assert list(curves) == ["pt", "lamp_p4", "lamp_p4[factor_lr=scaled,warmup_steps=2]"]
    for name, rows in curves.items():
        assert [(r["step"], r["n"]) for r in rows] == [(2, 2), (4, 2)], name
        assert 0 < rows[0]["seconds"] < rows[1]["seconds"] and 0 <= rows[1]["mean"] <= 100
    points = report["points"]["sst2"]["lamp_p4"]["1"]
    assert [p["step"] for p in points] == [2, 4] and all(p["eval_seconds"] > 0 for p in points)
    head = report["headline"]["sst2"]
    assert head["target"] == curves["pt"][-1]["mean"] - 1 and head["pt"]["vs_pt"] == 1.0
    assert head["pt"]["at_pt_time"] == curves["pt"][-1]["mean"]  # PT at its own final time is its final score
    assert [len(p["prompt_moves"]) for p in points] == [2, 2] and all(m > 0 for p in points for m in p["prompt_moves"])
    cosines = [c for p in points for c in p["prompt_step_cosines"]]
    assert len(cosines) == 4 and all(-1 <= c <= 1 for c in cosines)
    # PT trains the fed rows themselves, and Adam's first step is the sign of their gradient: a descent direction
    # (LAMP's rows move through its factors, a descent direction to first order only, so any sign at lr 0.3)
    assert report["points"]["sst2"]["pt"]["1"][0]["prompt_step_cosines"][0] > 0
    fed = report["fed_prompt"]["sst2"]
    assert list(fed) == list(curves) and all(f["start_row_norm"] > 0 and f["first_moves"] > 0 for f in fed.values())
    assert all(0 < f["first_cosines"] <= 1 for f in fed.values())
    assert fed["pt"]["end_row_norm"] != fed["pt"]["start_row_norm"]  # PT's rows are what it trains
    md = out.with_suffix(".md").read_text()
    assert "Time to PT's final accuracy less one point" in md and "At PT's final time (" in md
    assert "- lamp_p4: row norm " in md and "; cosine " in md
    assert 50 <= report["majority"]["sst2"] < 100 and "| lamp_p4 | " in md.split("Robustness:")[1]
    assert "vega" in out.with_suffix(".html").read_text()


def test_a_variant_with_its_own_budget_trains_and_is_scored_to_its_own_last_step(tmp_path):
    out = tmp_path / "curve"
    assert main(["bench", "curve", "--model", "tiny-t5", "--tasks", "sst2", "--seeds", "1", "--steps", "2",
                 "--eval-at", "2,4", "--batch-size", "2", "--max-source-length", "32", "--max-eval-examples", "8",
                 "--variants", "pt,lamp_p4[steps=4]", "--data-dir", str(DATA), "--output", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    points = report["points"]["sst2"]
    assert [p["step"] for p in points["pt"]["1"]] == [2]
    assert [p["step"] for p in points["lamp_p4[steps=4]"]["1"]] == [2, 4]
    assert [len(p["losses"]) for p in points["lamp_p4[steps=4]"]["1"]] == [2, 2]
    assert "| pt | " in (md := out.with_suffix(".md").read_text()) and md.split("| pt | ")[1].split("\n")[0] \
        .endswith("| – |")  # nothing scored past PT's budget


@pytest.mark.slow
def test_resume_keeps_the_seeds_a_report_has_and_runs_only_the_others(tmp_path, capsys):
    out = tmp_path / "curve"
    run = ["bench", "curve", "--model", "tiny-t5", "--tasks", "sst2", "--steps", "2", "--eval-at", "1,2",
           "--batch-size", "2", "--max-source-length", "32", "--max-eval-examples", "8", "--variants", "pt,lamp_p4",
           "--data-dir", str(DATA), "--output", str(out)]
    assert main([*run, "--seeds", "1"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert main([*run, "--seeds", "2,1", "--resume"]) == 0
    assert "sst2 seed 1: kept from an earlier sitting" in capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["settings"]["seeds"] == [1, 2]
    for name in ("pt", "lamp_p4"):  # seed 1 as the first sitting left it (its clock included), seed 2 new
        by_seed = report["points"]["sst2"][name]
        assert by_seed["1"] == first["points"]["sst2"][name]["1"] and [p["step"] for p in by_seed["2"]] == [1, 2]
        assert [r["n"] for r in report["curves"]["sst2"][name]] == [2, 2]
    assert [s["seeds"] for s in report["sittings"]] == [[1], [2]]
    assert "; seed 1 on " in (md := out.with_suffix(".md").read_text()) and "; seed 2 on " in md
    assert "steps (or a variant's own), seeds 1, 2, at most 8 " in md  # the seeds that ran

    assert main([*run, "--seeds", "3", "--resume", "--steps", "4", "--eval-at", "2,4"]) != 0  # other settings
    assert "resume: the report at --output ran with steps 2, not 4; eval_at [1, 2], not [2, 4]" in \
        capsys.readouterr().err
    report["sittings"][0]["machine"]["cpus"] += 64  # seeds from another kind of machine
    out.with_suffix(".json").write_text(json.dumps(report))
    assert main([*run, "--seeds", "3", "--resume"]) != 0
    assert "resume: seed 1 of the report at --output ran on another machine (cpus " in capsys.readouterr().err
    out.with_suffix(".json").write_bytes(b"\x89PNG\r\n")
    assert main([*run, "--seeds", "3", "--resume"]) != 0
    assert f"resume: {out.with_suffix('.json')} is not a JSON report" in capsys.readouterr().err


@pytest.mark.parametrize("eval_at, says", [("2", "ending at the longest budget, 4 steps"),
                                           ("1,4", "add 2, the last step of a variant's budget")])
def test_the_evaluation_steps_must_cover_every_budget(tmp_path, capsys, eval_at, says):
    assert main(["bench", "curve", "--model", "tiny-t5", "--steps", "2", "--eval-at", eval_at,
                 "--variants", "pt,lamp_p4[steps=4]", "--data-dir", str(DATA), "--output", str(tmp_path / "c")]) != 0
    assert says in capsys.readouterr().err


def test_first_time_at_a_target_reads_between_evaluations():
    from bench.curve import first_time_at

    curve = [{"seconds": 10.0, "mean": 60.0}, {"seconds": 20.0, "mean": 80.0}, {"seconds": 30.0, "mean": 79.0}]
    assert first_time_at(curve, 70.0) == 15.0  # half way from 60 at 10 s to 80 at 20 s
    assert first_time_at(curve, 50.0) == 10.0 and first_time_at(curve, 85.0) is None


def test_the_value_at_a_time_reads_between_evaluations_and_not_beyond_them():
    from bench.curve import value_at_time

    curve = [{"seconds": 10.0, "mean": 60.0}, {"seconds": 20.0, "mean": 80.0}, {"seconds": 30.0, "mean": 79.0}]
    assert value_at_time(curve, 15.0) == 70.0 and value_at_time(curve, 25.0) == 79.5
    assert value_at_time(curve, 10.0) == 60.0 and value_at_time(curve, 30.0) == 79.0
    assert value_at_time(curve, 5.0) is None and value_at_time(curve, 31.0) is None


def test_the_robustness_summary_counts_runs_near_chance_and_reads_the_loss_at_its_steps():
    from bench.curve import robustness

    def series(final: float, losses: list[float]) -> list[dict]:
        return [{"step": 30, "accuracy": final - 10, "losses": losses[:30]},
                {"step": 60, "accuracy": final, "losses": losses[30:]}]

    report = {"majority": {"custom": 27.6}, "main_metrics": {"custom": "accuracy"}, "points": {"custom": {
        "pt": {"1": series(80.0, [11.0] * 9 + [2.0] * 51), "2": series(70.0, [13.0] * 9 + [4.0] * 51)},
        "lamp_p4": {"1": series(32.5, [12.0] * 60), "2": series(32.7, [12.0] * 60)}}}}
    rows = robustness(report, "custom")
    assert "majority-class rate (27.6 %)" in rows[0]
    assert rows[-2:] == ["| pt | 80.0 / 70.0 | 12.00 | 3.00 | 3.00 | 0 of 2 |",
                         "| lamp_p4 | 32.5 / 32.7 | 12.00 | 12.00 | 12.00 | 1 of 2 |"]  # 32.7 is 5.1 above 27.6


@pytest.mark.slow
def test_curve_trains_peft_prompt_tuning_from_our_pts_start(tmp_path):
    out = tmp_path / "curve"
    assert main(["bench", "curve", "--model", "smollm2-135m", "--tasks", "sst2", "--seeds", "1", "--steps", "2",
                 "--eval-at", "1,2", "--max-source-length", "32", "--max-eval-examples", "8", "--variants",
                 "pt,peft_pt", "--data-dir", str(DATA), "--output", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    pt, peft = (report["points"]["sst2"][name]["1"] for name in ("pt", "peft_pt"))
    assert [p["step"] for p in peft] == [1, 2] and all(p["seconds"] > 0 for p in peft)
    # the first step's loss: the same prompt, batch and target tokens through PEFT's forward and through ours
    assert peft[0]["losses"][0] == pytest.approx(pt[0]["losses"][0], rel=1e-4)


def test_a_curve_on_the_custom_task_trains_on_the_given_files():
    from bench.curve import CurveSettings

    trec = DATA / "trec"
    settings = CurveSettings(tasks=("custom", "sst2"), variants=("pt", "lamp_p4"), steps=10, eval_at=(10,),
                             train_file=str(trec / "train.csv"), eval_file=str(trec / "test.csv"))
    custom = settings.run_config("lamp_p4", "custom", 1)
    assert (custom.data.train_file, custom.data.eval_file, custom.method.pool) == \
        (str(trec / "train.csv"), str(trec / "test.csv"), 4)
    assert settings.run_config("pt", "sst2", 1).data.train_file is None  # a benchmark task brings its own files


@pytest.mark.parametrize(("output", "expected"), [("out/curve-lamp-lr0.003", "out/curve-lamp-lr0.003.json"),
                                                  ("out/curve.md", "out/curve.json"), ("curve", "curve.json")])
def test_a_dot_in_the_output_name_stays_part_of_it(output: str, expected: str) -> None:
    assert report_file(Path(output), ".json") == Path(expected)
