"""Accuracy tables through the engine's train(): methods x tasks x seeds (the paper's Table 1 layout), the
ablations that settle LAMP's defaults (q_init x pool size p, rank r, prompt length l, learning rate), and the
paper protocol with either selection rule (which split picked each run's best evaluation is a column).

Every run is an ordinary run folder under --work-dir, named by its configuration; a rerun reuses finished
folders, so an interrupted table continues where it stopped. `--via-queue` stores and queues the runs for the
workers instead (worker.queue.submit_run), so the dashboard shows them as they finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.speed import machine
from lamp_common.result import SELECTION_SPLITS, RunResult
from lamp_engine.aliases import ALIASES
from lamp_engine.config import PROTOCOLS, RunConfig
from lamp_engine.methods import LampConfig
from lamp_engine.tuning import LrChoice

PARTS = ("main", "q_init_pool", "pool", "lr", "rank", "length")


@dataclass(frozen=True)
class Budget:
    """How long each run of a model trains and how much it is evaluated (stated in the table)."""

    steps: int | None  # None: `task_epochs` passes over the training split
    max_eval_examples: int | None  # None: the full evaluation sets
    batch_size: int = 8
    max_source_length: int = 128
    dtype: str = "auto"  # bf16 halves the step time on a CPU with avx512_bf16 or AMX
    task_epochs: tuple[tuple[str, float], ...] = ()  # (task, epochs) where steps is None
    max_train_examples: int | None = None  # a seeded sample of the training split, where it is larger

    def epochs(self, task: str) -> float:
        return dict(self.task_epochs).get(task, 1.0)


@dataclass(frozen=True)
class TableRun:
    part: str  # which table it belongs to
    row: str  # e.g. the method, or "p=2"
    column: str  # e.g. "minilm-l6 / rte"
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        digest = hashlib.sha1(json.dumps(self.config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.config.model}-{self.config.task}-{self.config.method.name}-s{self.seed}-{digest}"


@dataclass(frozen=True)
class Plan:
    budgets: dict[str, Budget]  # per model
    main: tuple[tuple[str, str], ...]  # (model, task) columns of the main table
    methods: tuple[tuple[str, dict], ...]  # (row label, prompt settings) rows of the main table
    seeds: tuple[int, ...]
    ablation: tuple[str, str]  # (model, task) of the q_init/pool, rank and length ablations
    pool_check: tuple[str, str, tuple[int, ...]]  # (model, task, pool sizes): p on the second model family
    lr_check: tuple[tuple[str, str, tuple[float, ...]], ...]  # (model, task, learning rates) per family
    parts: tuple[str, ...] = PARTS  # run when none are named


def paper_protocol(method: str, select_on: str, **settings) -> dict:
    """A row of `--protocol paper` (its budget cut by the plan's epochs) with the given selection rule."""
    values = PROTOCOLS["paper"].under({"method": method, "select_on": select_on, **settings})
    return {k: v for k, v in values.items() if k != "epochs"}


PLANS: dict[str, Plan] = {
    "full": Plan(  # about an hour on a 2-core machine with avx512_bf16 (docs/benchmarks.md, section 4)
        budgets={"minilm-l6": Budget(steps=100, max_eval_examples=200, dtype="bf16"),
                 "smollm2-135m": Budget(steps=50, max_eval_examples=64, dtype="bf16")},
        main=(("minilm-l6", "sst2"), ("minilm-l6", "cb"), ("minilm-l6", "rte"), ("minilm-l6", "boolq"),
              ("smollm2-135m", "sst2"), ("smollm2-135m", "cb"), ("smollm2-135m", "rte")),
        methods=(("pt", {"method": "pt"}), ("lamp p=4", {"method": "lamp", "pool": 4})), seeds=(1, 2, 3),
        ablation=("minilm-l6", "sst2"), pool_check=("smollm2-135m", "sst2", (1, 4)),
        lr_check=(("minilm-l6", "sst2", (0.003, 0.01, 0.03, 0.3)), ("smollm2-135m", "sst2", (0.003, 0.01, 0.03)))),
    "methods": Plan(  # every method as its authors set it, on the full evaluation sets (issues 12 and 13)
        budgets={"minilm-l6": Budget(steps=100, max_eval_examples=None, max_source_length=256, dtype="bf16"),
                 "smollm2-135m": Budget(steps=100, max_eval_examples=None, max_source_length=256, dtype="bf16")},
        main=tuple((model, task) for model in ("minilm-l6", "smollm2-135m") for task in ("sst2", "cb", "rte")),
        methods=(("pt", {"method": "pt"}), ("lamp p=4", {"method": "lamp", "pool": 4}), ("dpt", {"method": "dpt"}),
                 ("dept", {"method": "dept"}), ("residual", {"method": "residual"}), ("lora r=8", {"method": "lora"}),
                 ("dora r=8", {"method": "dora"}), ("pissa r=8", {"method": "pissa"}), ("full", {"method": "full"})),
        seeds=(1, 2, 3), ablation=("minilm-l6", "sst2"), pool_check=("smollm2-135m", "sst2", (1, 4)),
        lr_check=()),
    "paper-protocol": Plan(  # the paper protocol cut to 2 cores, with either selection rule (issue 31; 1-3 hours)
        budgets={"minilm-l6": Budget(steps=None, max_eval_examples=None, batch_size=16, max_source_length=256,
                                     dtype="bf16", task_epochs=(("cb", 3.0), ("rte", 3.0)), max_train_examples=160)},
        main=(("minilm-l6", "cb"), ("minilm-l6", "rte")),
        methods=tuple((f"{name}, selected on {rule}", paper_protocol(name, rule, lr=0.01))
                      for name in ("pt", "lamp") for rule in ("validation", "heldout")),
        seeds=(1, 2, 3), ablation=("minilm-l6", "cb"), pool_check=("minilm-l6", "cb", ()), lr_check=(),
        parts=("main",)),
    "smoke": Plan(  # for tests: the tiny random T5, seconds per run; its accuracy means nothing
        budgets={"tiny-t5": Budget(steps=2, max_eval_examples=4, batch_size=2, max_source_length=32)},
        main=(("tiny-t5", "sst2"),), methods=(("pt", {"method": "pt"}), ("lamp", {"method": "lamp"})),
        seeds=(1, 2), ablation=("tiny-t5", "sst2"), pool_check=("tiny-t5", "sst2", (1, 2)),
        lr_check=(("tiny-t5", "sst2", (0.3,)),)),
}


def make_config(model: str, task: str, seed: int, budget: Budget, data_dir: str | None, **prompt) -> RunConfig:
    values = {"model": model, "task": task, "seed": seed, "data_dir": data_dir, "steps": budget.steps,
              "epochs": budget.epochs(task), "max_train_examples": budget.max_train_examples,
              "batch_size": budget.batch_size, "max_eval_examples": budget.max_eval_examples,
              "max_source_length": budget.max_source_length, "eval_batch_size": 32, "eval_every": 0,
              "device": "cpu", "dtype": budget.dtype, **prompt}
    return RunConfig.from_flat(values)


def plan_runs(name: str, data_dir: str | None, parts: list[str] | None = None, models: list[str] | None = None,
              tasks: list[str] | None = None, seeds: list[int] | None = None,
              methods: list[str] | None = None) -> list[TableRun]:
    """Every run of the plan's parts, in the order they are trained (cheap ablations before the long table);
    `models`, `tasks`, `seeds` and `methods` keep a subset."""
    from lamp_engine.errors import ConfigError

    plan = PLANS[name]
    parts = parts or list(plan.parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    runs: list[tuple[int, TableRun]] = []  # (priority, run): what settles a question first
    model, task = plan.ablation
    column = f"{model} / {task}"

    def add(priority: int, part: str, row: str, col: str, model_: str, task_: str, **prompt) -> None:
        for seed in plan.seeds if part != "lr" else plan.seeds[:1]:
            config = make_config(model_, task_, seed, plan.budgets[model_], data_dir, **prompt)
            runs.append((priority, TableRun(part, row, col, seed, config)))

    if "q_init_pool" in parts:
        for pool in (1, 4, 2):
            for q_init in ("balanced", "paper"):
                add(0 if pool != 2 else 2, "q_init_pool", f"q_init={q_init}, p={pool}", column, model, task,
                    method="lamp", q_init=q_init, pool=pool)
    if "main" in parts:
        for model_, task_ in plan.main:
            for row, prompt in plan.methods:
                add(1, "main", row, f"{model_} / {task_}", model_, task_, **prompt)
    if "pool" in parts:
        model_, task_, pools = plan.pool_check
        for pool in pools:
            add(2, "pool", f"p={pool}", f"{model_} / {task_}", model_, task_, method="lamp", pool=pool)
    if "lr" in parts:
        for model_, task_, lrs in plan.lr_check:
            default = LampConfig().default_lr(ALIASES[model_].family)
            for lr in lrs:  # the family's default is left unset, so the run is the p=1 run of the other parts
                add(3, "lr", f"lr={lr}", f"{model_} / {task_}", model_, task_, method="lamp", pool=1,
                    lr=None if lr == default else lr)
    if "rank" in parts:
        for rank in (4, 8, 16):
            add(4, "rank", f"r={rank}", column, model, task, method="lamp", pool=1, rank=rank)
    if "length" in parts:
        for length in (20, 100, 200):
            add(5, "length", f"l={length}", column, model, task, method="lamp", pool=1, length=length)
    order = list(plan.budgets)  # cheaper models first, then by priority: an interrupted table is still useful
    ordered = [run for _, run in sorted(runs, key=lambda pr: (order.index(pr[1].config.model), pr[0]))]
    return [run for run in ordered if (models is None or run.config.model in models)
            and (tasks is None or run.config.task in tasks) and (seeds is None or run.seed in seeds)
            and (methods is None or run.config.method.name in methods)]


def record(run: TableRun, result: RunResult) -> dict:
    return {"part": run.part, "row": run.row, "column": run.column, "seed": run.seed, "key": run.key,
            "main_metric": result.main_metric, "value": result.main_metric_value, "metrics": result.metrics,
            "train_seconds": result.train_seconds, "step_seconds_median": result.step_seconds_median,
            "trainable_params": result.trainable_params, "prompt_tokens": result.prompt_tokens,
            "lr": result.config["train"]["lr"], "selected_on": result.selected_on}


def train_in_process(runs: list[TableRun], work_dir: Path, log: Callable[[str], None],
                     save: Callable[[list[dict]], None]) -> list[dict]:
    """Train each run not already finished in work_dir; saves the records after every run."""
    from lamp_engine.train import train

    records = []
    for i, run in enumerate(runs, 1):
        folder = work_dir / run.key
        saved = folder / "result.json"
        started = time.perf_counter()
        result = RunResult.from_json(saved.read_text()) if saved.is_file() else train(run.config, folder)
        records.append(record(run, result))
        save(records)
        log(f"[{i}/{len(runs)}] {run.part}: {run.row} on {run.column}, seed {run.seed}: "
            f"{result.main_metric} {records[-1]['value']:.1f} ({time.perf_counter() - started:.0f} s)")
    return records


def train_tuned(runs: list[TableRun], work_dir: Path, log: Callable[[str], None],
                save: Callable[[list[dict], list[dict]], None]) -> tuple[list[dict], list[dict]]:
    """Each (row, column) at its own best learning rate: its first seed trains at every rate of the method's
    grid as selection-only runs (the reported set is never read), then its seeds train at the rate with the best
    selection score (lamp_engine.tuning). Returns (final records with their choice, search points)."""
    from lamp_engine.train import train
    from lamp_engine.tuning import choose_lr, final_configs, search_configs

    def trained(config: RunConfig, seed: int) -> RunResult:
        folder = work_dir / TableRun("", "", "", seed, config).key
        saved = folder / "result.json"
        return RunResult.from_json(saved.read_text()) if saved.is_file() else train(config, folder)

    records: list[dict] = []
    searched: list[dict] = []
    cells = list(dict.fromkeys((run.row, run.column) for run in runs))
    for number, (row, column) in enumerate(cells, 1):
        seeds = [run for run in runs if (run.row, run.column) == (row, column)]
        first = seeds[0]
        scores, metric = {}, ""
        for config in search_configs(first.config):
            started = time.perf_counter()
            result = trained(config, first.seed)
            metric = result.main_metric or ""
            scores[config.train.lr] = result.best_metrics.get(metric)
            searched.append({"part": first.part, "row": row, "column": column, "seed": first.seed,
                             "lr": config.train.lr, "selection_score": scores[config.train.lr],
                             "train_seconds": result.train_seconds, "step_seconds_median": result.step_seconds_median})
            save(records, searched)
            score = scores[config.train.lr]
            log(f"[cell {number}/{len(cells)}] search: {row} on {column} at lr {config.train.lr:g}: selection "
                f"{metric} {'none' if score is None else f'{score:.1f}'} ({time.perf_counter() - started:.0f} s)")
        choice = choose_lr(scores, metric)
        for run, config in zip(seeds, final_configs(first.config, choice, [run.seed for run in seeds]), strict=True):
            final = TableRun(run.part, run.row, run.column, run.seed, config)
            started = time.perf_counter()
            result = trained(config, run.seed)
            records.append({**record(final, result), "tuning": choice.to_dict()})
            save(records, searched)
            log(f"[cell {number}/{len(cells)}] final: {row} on {column} at {choice.label()}, seed {run.seed}: "
                f"{result.main_metric} {records[-1]['value']:.1f} ({time.perf_counter() - started:.0f} s)")
    return records, searched


def submit_to_queue(runs: list[TableRun], log: Callable[[str], None]) -> list[dict]:
    """Store and queue every run for the workers; the dashboard shows them as they finish."""
    from worker.queue import submit_run

    records = []
    for run in runs:
        run_id = submit_run(run.config)
        records.append({"part": run.part, "row": run.row, "column": run.column, "seed": run.seed,
                        "key": run.key, "run_id": run_id})
        log(f"queued run {run_id}: {run.part}: {run.row} on {run.column}, seed {run.seed}")
    return records


def run_table(runs: list[TableRun], work_dir: Path, via_queue: bool = False,
              log: Callable[[str], None] = print, save: Callable[[dict], None] | None = None,
              tune_lr: bool = False) -> dict:
    """Train (or queue) the runs and aggregate them into mean and standard deviation per cell; `tune_lr`: each
    cell at its own best learning rate (train_tuned)."""
    started = time.perf_counter()
    budgets = {r.config.model: {"steps": r.config.train.steps, "batch_size": r.config.train.batch_size,
                                "max_eval_examples": r.config.train.max_eval_examples,
                                "max_source_length": r.config.train.max_source_length,
                                "dtype": r.config.train.dtype, "max_train_examples": r.config.data.max_train_examples}
             for r in runs}
    for r in runs:
        if r.config.train.steps is None:  # a budget in epochs, per task
            budgets[r.config.model].setdefault("epochs", {})[r.config.task] = r.config.train.epochs
    load_start = os.getloadavg()[0]

    def report(records: list[dict], searched: list[dict] | None = None) -> dict:
        return {"budgets": budgets, "runs": records, "cells": aggregate(records),
                "wall_seconds": time.perf_counter() - started, "via_queue": via_queue,
                "machine": machine(torch.device("cpu"), load_start, os.getloadavg()[0]),
                **({"lr_search": searched} if searched is not None else {})}

    if via_queue:
        return report(submit_to_queue(runs, log))
    work_dir.mkdir(parents=True, exist_ok=True)
    if tune_lr:
        return report(*train_tuned(runs, work_dir, log, lambda recs, found: save(report(recs, found)) if save
                                   else None))
    records = train_in_process(runs, work_dir, log, lambda recs: save(report(recs)) if save else None)
    return report(records)


def aggregate(records: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of the main metric per (part, row, column), and which splits picked
    the runs' best evaluations."""
    cells: dict[tuple[str, str, str], list[float]] = {}
    selected: dict[tuple[str, str, str], set[str]] = {}
    tuned: dict[tuple[str, str, str], str] = {}
    for r in records:
        if "value" in r:
            cells.setdefault((r["part"], r["row"], r["column"]), []).append(r["value"])
            selected.setdefault((r["part"], r["row"], r["column"]), set()).add(r.get("selected_on", "heldout"))
            if r.get("tuning"):
                tuned[r["part"], r["row"], r["column"]] = LrChoice.from_dict(r["tuning"]).label()
    return [{"part": p, "row": row, "column": col, "mean": statistics.mean(v),
             "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v),
             "selected_on": sorted(selected[p, row, col]), **({"tuned": tuned[p, row, col]} if (p, row, col) in tuned
                                                              else {})} for (p, row, col), v in cells.items()]


def budget_text(model: str, budget: dict) -> str:
    """One model's budget in words, for the line above the tables."""
    length = (f"{budget['steps']} steps" if budget.get("steps") else
              " and ".join(f"{epochs:g} epochs on {task}" for task, epochs in budget.get("epochs", {}).items()))
    evaluated = (f"<= {budget['max_eval_examples']} eval examples" if budget["max_eval_examples"]
                 else "full evaluation sets")
    if budget.get("max_train_examples"):
        evaluated += f", <= {budget['max_train_examples']} training examples (a seeded sample)"
    return (f"{model} ({budget.get('dtype', 'auto')}): {length} x batch {budget['batch_size']}, source <= "
            f"{budget['max_source_length']} tokens, {evaluated}")


def selection_text(cells: list[dict]) -> str:
    """The 'selected on' column of a row: the split (or splits) that picked its runs' best evaluations."""
    rules = sorted({rule for cell in cells for rule in cell.get("selected_on", ["heldout"])})
    return ", ".join(SELECTION_SPLITS[rule] for rule in rules)


def markdown(report: dict) -> str:
    """One Markdown table per part: rows x columns, mean ± std over seeds."""
    if report["via_queue"]:
        ids = ", ".join(str(r["run_id"]) for r in report["runs"])
        return f"queued {len(report['runs'])} runs (ids {ids}); the dashboard's Compare view tabulates them\n"
    budgets = "; ".join(budget_text(model, budget) for model, budget in report["budgets"].items())
    m = report.get("machine")
    where = f" on {m['cpus']} x {m['cpu_model']}, load {m['load_average_start']:.2f} -> {m['load_average_end']:.2f}" \
        if m else ""
    out = [f"Budgets: {budgets}. Wall time {report['wall_seconds'] / 60:.1f} min{where}.", ""]
    for part in PARTS:
        cells = [c for c in report["cells"] if c["part"] == part]
        if not cells:
            continue
        rows = list(dict.fromkeys(c["row"] for c in cells))
        columns = list(dict.fromkeys(c["column"] for c in cells))
        value = {(c["row"], c["column"]): c for c in cells}
        out += [f"**{part}** (main metric, mean ± std over seeds)", "",
                "| | selected on | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
        for row in rows:
            entries = [(f"{value[row, col]['mean']:.1f} ± {value[row, col]['std']:.1f}"
                        + (f" (n={value[row, col]['n']})" if value[row, col]["n"] == 1 else "")
                        + (f" ({value[row, col]['tuned']})" if value[row, col].get("tuned") else ""))
                       if (row, col) in value else "-" for col in columns]
            rule = selection_text([c for c in cells if c["row"] == row])
            out.append(f"| {row} | {rule} | " + " | ".join(entries) + " |")
        out.append("")
    return "\n".join(out + search_table(report.get("lr_search", [])))


def search_table(points: list[dict]) -> list[str]:
    """The learning-rate searches: each cell's selection score at every rate of its grid (first seed)."""
    if not points:
        return []
    rates = sorted({p["lr"] for p in points})
    scores = {(p["row"], p["column"], p["lr"]): p["selection_score"] for p in points}
    cells = list(dict.fromkeys((p["row"], p["column"]) for p in points))
    out = ["**learning-rate search** (selection-split score of the first seed at each rate; the reported set is "
           "not read)", "", "| | | " + " | ".join(f"lr {lr:g}" for lr in rates) + " |",
           "|---|---|" + "---:|" * len(rates)]
    for row, column in cells:
        values = [scores.get((row, column, lr)) for lr in rates]
        out.append(f"| {row} | {column} | " + " | ".join("" if v is None else f"{v:.1f}" for v in values) + " |")
    return [*out, ""]
