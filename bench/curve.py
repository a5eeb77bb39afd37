"""Time to accuracy: how fast each method reaches an accuracy, as a user experiences it (`lamp bench curve`).

Every variant trains on the same task, seed and batches; the variants advance in lockstep, a segment of steps each
in a rotated order, and every one is scored on the task's full evaluation set at the same steps, so machine
noise hits them alike. A point records the step, the seconds spent in training steps so far (evaluation
excluded) and the metrics. Variants:

- ours (`pt`, `lamp_p1`, `lamp_p4`, and any other method of the registry by name): the engine's own build and
  `train_step`, exactly as `lamp train` runs them. A variant may carry settings of its own, `lamp_p4[rank=16,
  warmup_steps=10]`; `--lamp KEY=VALUE` sets one for every LAMP variant. A LAMP variant given one of the research
  levers of bench/ablations.py (`lamp_p4[factor_lr=scaled]`) runs as that module's `lamp_ablation`. Its own
  `steps` is its budget (`lamp_p4[steps=300]`: LAMP's step is the shorter, so at equal wall-clock time it takes
  more); a variant stops being scored after its budget.
- `peft_pt`: PEFT's prompt tuning on its own instance of the model, trained on PEFT's forward with labels, from
  the same vocabulary rows as our PT; it is scored through our evaluation with its trained prompt, which gives
  the same outputs (tests/test_train.py checks that a prompt exported to PEFT reproduces our logits).

The headline is the ratio of the times at which LAMP and PT first reach PT's final accuracy less one point, read off
the seed-mean curves (linear between evaluations), and each variant's accuracy at PT's final time (equal wall-clock:
give the faster variants budgets whose evaluations reach past it). For a soft prompt every step also records how far
the prompt the model reads (after LAMP's pooling) moved, per token, and the cosine of that move with the steepest
descent of the loss in those rows (the negative gradient with respect to them, on the step's batch); each evaluation
records their mean row norm. At one learning rate Adam moves each trained entry by about as much, so how far and in
which direction the fed rows move depends on the parameterisation.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from bench.ablations import LEVERS, with_levers
from lamp_engine.aliases import BackboneFamily
from lamp_engine.config import CUSTOM_TASK, RunConfig
from lamp_engine.errors import ConfigError
from lamp_engine.health import majority_rate
from lamp_engine.methods import METHODS
from lamp_engine.prompts.base import SoftPrompt
from lamp_engine.tasks import Task
from lamp_engine.train import Setup, batches, build_model_and_method, evaluate, load_splits, train_step

if TYPE_CHECKING:
    import altair as alt

PROMPT_VARIANTS = {"pt": ("pt", {}), "lamp_p1": ("lamp", {"pool": 1}), "lamp_p4": ("lamp", {"pool": 4})}
DEFAULT_VARIANTS = ("pt", "peft_pt", "lamp_p1", "lamp_p4")
MACHINE_FACTS = ("cpus", "cpu_model", "cpu_bf16", "threads", "torch")  # what seeds joined by --resume must share
MOVE_WINDOW = 10  # steps at each end of a run over which the fed prompt's moves are summed up
LOSS_STEPS = (1, 10, 50)  # the steps whose training loss the robustness summary shows (issue 36)
NEAR_CHANCE = 5.0  # accuracy points above the majority-class rate within which a run counts as near chance


@dataclass
class CurveSettings:
    model: str = "smollm2-135m"
    tasks: tuple[str, ...] = ("sst2",)
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    seeds: tuple[int, ...] = (1, 2, 3)
    steps: int = 150
    eval_at: tuple[int, ...] = (25, 50, 100, 150)  # steps at which the whole evaluation set is scored
    batch_size: int = 8
    max_source_length: int = 256
    max_eval_examples: int | None = None  # the full evaluation set unless a screening run caps it (said so)
    dtype: str = "auto"
    lr: float | None = None  # the family's default for each method unless given
    lamp: dict[str, Any] = field(default_factory=dict)  # LAMP settings for every LAMP variant (rank, a lever...)
    data_dir: str | None = None
    train_file: str | None = None  # the custom task's own files (`--tasks custom`), e.g. TREC's CSV
    eval_file: str | None = None

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if split_variant(v)[0] not in (*PROMPT_VARIANTS, "peft_pt", *METHODS)]
        if unknown:
            raise ConfigError(f"variants: unknown {', '.join(unknown)}; choose from "
                              f"{', '.join((*PROMPT_VARIANTS, 'peft_pt', *METHODS))}")
        budgets = sorted({self.budget(v) for v in self.variants})
        if not self.eval_at or sorted(set(self.eval_at)) != list(self.eval_at) or self.eval_at[-1] != budgets[-1]:
            raise ConfigError(f"eval-at: give increasing steps ending at the longest budget, {budgets[-1]} steps; got "
                              f"{','.join(map(str, self.eval_at))}")
        unscored = [b for b in budgets if b not in self.eval_at]
        if unscored:
            raise ConfigError(f"eval-at: add {','.join(map(str, unscored))}, the last step of a variant's budget, so "
                              f"that its final accuracy is scored")

    def budget(self, variant: str) -> int:
        """A variant's training steps: its own (`lamp_p4[steps=300]`, to compare at equal wall-clock time, since
        LAMP's step is the shorter) or --steps. Its learning rate schedule spans its own budget."""
        return int(split_variant(variant)[1].get("steps", self.steps))

    def run_config(self, variant: str, task: str, seed: int) -> RunConfig:
        name, own = split_variant(variant)
        method, settings = PROMPT_VARIANTS.get(name, ("pt" if name == "peft_pt" else name, {}))
        if method == "lamp":
            settings = {**settings, **self.lamp}
        values = {"model": self.model, "task": task, "method": method, **settings, "seed": seed, "steps": self.steps,
                  "batch_size": self.batch_size, "max_source_length": self.max_source_length, "device": "cpu",
                  "dtype": self.dtype, "max_eval_examples": self.max_eval_examples, "data_dir": self.data_dir,
                  "lr": self.lr, **own}
        if task == CUSTOM_TASK:
            values.update(train_file=self.train_file, eval_file=self.eval_file)
        levers = {key: values.pop(key) for key in LEVERS & values.keys()}
        return with_levers(RunConfig.from_flat(values), levers)


def split_variant(variant: str) -> tuple[str, dict[str, Any]]:
    """`lamp_p4[rank=16,warmup_steps=10]` -> ("lamp_p4", {"rank": 16, "warmup_steps": 10})."""
    name, _, rest = variant.partition("[")
    settings: dict[str, Any] = {}
    for item in filter(None, rest.rstrip("]").split(",")):
        key, value = setting(item, f"variants: {item!r} in {variant!r}")
        settings[key] = value
    return name, settings


def setting(item: str, where: str) -> tuple[str, Any]:
    """`rank=16` -> ("rank", 16): a configuration field, or a research lever of bench/ablations.py (text)."""
    from lamp_engine.config import flat_fields

    key, sep, value = (part.strip() for part in item.partition("="))
    if not sep or key not in (*flat_fields(), *LEVERS):
        raise ConfigError(f"{where} should be FIELD=VALUE with a configuration field or a lever of "
                          f"bench/ablations.py ({', '.join(sorted(LEVERS))})")
    return key, value if key in LEVERS else flat_fields()[key].kind(value)


@dataclass
class Runner:
    """One variant's training in progress: its setup, its batch order and the clock of its steps."""

    name: str
    setup: Setup
    step: Callable[[list], float]  # one optimiser step on a batch of encoded examples
    batch_order: Iterator[list[int]]
    points: list[dict] = field(default_factory=list)
    done: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    moves: list[float] = field(default_factory=list)  # per step: mean over fed rows of the norm of their change
    cosines: list[float] = field(default_factory=list)  # per step: cosine of that change with -d loss / d fed rows
    gradient: dict[str, torch.Tensor] = field(default_factory=dict)  # "fed": the last step's d loss / d fed rows
    fed: torch.Tensor | None = field(init=False)  # the fed prompt after the last step
    start_row_norm: float | None = field(init=False)

    def __post_init__(self) -> None:
        self.fed = fed_prompt(self.setup)
        self.start_row_norm = row_norm(self.fed) if self.fed is not None else None

    def advance_to(self, target: int) -> None:
        order = self.setup.train
        while self.done < target:
            indices = next(self.batch_order)
            tick = time.perf_counter()
            loss = self.step([order[i] for i in indices])
            self.seconds += time.perf_counter() - tick
            self.losses.append(loss)
            self.record_move()
            self.done += 1

    def record_move(self) -> None:
        now = fed_prompt(self.setup)
        if now is not None:
            move = now - self.fed
            self.moves.append(move.norm(dim=1).mean().item())
            descent = -self.gradient.pop("fed")
            self.cosines.append((move.flatten() @ descent.flatten() / (move.norm() * descent.norm())).item())
            self.fed = now


def fed_prompt(setup: Setup) -> torch.Tensor | None:
    """The prompt rows the model reads (LAMP's pooled ones), or None for a method that trains no soft prompt."""
    if not isinstance(setup.method, SoftPrompt):
        return None
    with torch.no_grad():
        return setup.method().detach().float().clone()


def row_norm(rows: torch.Tensor) -> float:
    return rows.norm(dim=1).mean().item()


def keep_in(gradient: dict[str, torch.Tensor]) -> Callable[[torch.Tensor], None]:
    """A tensor hook that keeps the gradient reaching the fed rows (a copy of l/p x d floats per step)."""
    return lambda grad: gradient.__setitem__("fed", grad.detach().float().clone())


def engine_runner(name: str, setup: Setup, config: RunConfig) -> Runner:
    def step(batch: list) -> float:
        loss = train_step(setup.backbone, setup.method, batch, setup.optimizer, config.train.max_grad_norm)
        setup.scheduler.step()
        return loss

    runner = Runner(name, setup, step, batches(len(setup.train), config.train.batch_size, config.train.seed))

    def hook_fed_rows(module: torch.nn.Module, inputs: tuple, rows: torch.Tensor) -> None:
        if rows.requires_grad:  # a training step, not an evaluation
            rows.register_hook(keep_in(runner.gradient))

    if isinstance(setup.method, SoftPrompt):  # the rows it returns are the ones the model reads
        with torch.enable_grad():
            rows = setup.method()
        if rows.is_leaf:  # PT returns its parameter itself: one hook serves the whole run
            rows.register_hook(keep_in(runner.gradient))
        else:  # LAMP rebuilds its rows every step: a hook on each step's rows
            setup.method.register_forward_hook(hook_fed_rows)
    return runner


def peft_runner(setup: Setup, config: RunConfig) -> Runner:
    """PEFT's prompt tuning on its own model instance, from our PT's initial prompt, at our PT's learning rate and
    schedule; `setup` is our PT on yet another instance, which scores PEFT's prompt once copied in."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    from lamp_engine.backbones import load_backbone
    from lamp_engine.backbones.base import pad, pad_mask

    if setup.backbone.family is not BackboneFamily.CAUSAL:
        raise ConfigError(f"variants: peft_pt runs on causal models here; {config.model} is "
                          f"{setup.backbone.family}")
    model = load_backbone(config.model, config.train).model
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                          num_virtual_tokens=config.method.length))
    prompt = peft_model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        prompt.copy_(setup.method.P)  # the same vocabulary rows as our PT
    optimizer = torch.optim.AdamW([prompt], lr=setup.lr, weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: setup.scheduler.lr_lambdas[0](s))

    def step(batch: list) -> float:
        rows = [e.source + e.target for e in batch]
        labels = pad([[-100] * len(e.source) + e.target for e in batch], -100)
        loss = peft_model(input_ids=pad(rows, 0), attention_mask=pad_mask(rows), labels=labels, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([prompt], config.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            setup.method.P.copy_(prompt.float())  # what our evaluation scores
        return loss.item()

    runner = Runner("peft_pt", setup, step, batches(len(setup.train), config.train.batch_size, config.train.seed))
    prompt.register_hook(keep_in(runner.gradient))  # PEFT's prompt rows are the fed rows
    return runner


def score(runner: Runner, task: Task, examples: list) -> None:
    setup = runner.setup
    started = time.perf_counter()
    metrics, _ = evaluate(setup.backbone, setup.method, task, examples, setup.test, 32)
    since = runner.points[-1]["step"] if runner.points else 0  # the steps since the last evaluation
    fed = {"prompt_moves": runner.moves[since:], "prompt_step_cosines": runner.cosines[since:],
           "prompt_row_norm": row_norm(runner.fed),
           "prompt_start_row_norm": runner.start_row_norm} if runner.fed is not None else {}
    runner.points.append({"step": runner.done, "seconds": runner.seconds, **metrics,
                          "eval_seconds": time.perf_counter() - started, "losses": runner.losses[since:], **fed})


def run_seed(settings: CurveSettings, task_name: str, seed: int,
             log: Callable[[str], None]) -> tuple[dict[str, list], float]:
    """Every variant on one task and seed, in lockstep; their points, and the evaluation set's majority-class
    rate (the accuracy of always answering its most common label, in %)."""
    runners, task, test = [], None, None
    for name in settings.variants:
        config = settings.run_config(name, task_name, seed)
        task, splits = load_splits(config)
        setup = build_model_and_method(config, splits, check_loaded=False)
        runners.append(peft_runner(setup, config) if name == "peft_pt" else engine_runner(name, setup, config))
        test = splits.test
    for index, target in enumerate(settings.eval_at):
        shift = index % len(runners)
        going = [r for r in runners[shift:] + runners[:shift] if settings.budget(r.name) >= target]
        for runner in going:
            runner.advance_to(target)
            score(runner, task, test)
        log(f"{task_name} seed {seed}: step {target}: " + ", ".join(
            f"{r.name} {r.points[-1][task.main_metric]:.1f} ({r.seconds:.0f} s)" for r in going))
    return {r.name: r.points for r in runners}, majority_rate([e.choices.index(e.target) for e in test])


def run_curve(settings: CurveSettings, log: Callable[[str], None] = print,
              save: Callable[[dict], None] | None = None, previous: dict | None = None) -> dict:
    """Every task and seed, but those an earlier sitting of the same settings (`previous`, its report) already ran,
    which are kept as they are; the report (settings, sittings, points, mean curves, headline ratios)."""
    from bench.speed import machine
    from lamp_engine.tasks import get_task

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    points, sittings = kept_points(settings, previous) if previous else ({}, [])
    check_same_machine(sittings, machine(torch.device("cpu"), load_start, load_start))
    seeds = sorted({*settings.seeds, *(seed for sitting in sittings for seed in sitting["seeds"])})
    merged = dataclasses.replace(settings, seeds=tuple(seeds))
    main_metrics = {task_name: get_task(task_name).main_metric for task_name in settings.tasks}
    majority = dict(previous.get("majority", {})) if previous else {}
    report, ran = {**summarise(merged, points, main_metrics), "sittings": sittings, "majority": majority}, []
    for task_name in settings.tasks:
        for seed in settings.seeds:
            if seed in points.get(task_name, {}).get(settings.variants[0], {}):
                log(f"{task_name} seed {seed}: kept from an earlier sitting")
                continue
            by_variant, majority[task_name] = run_seed(settings, task_name, seed, log)
            for name, series in by_variant.items():
                points.setdefault(task_name, {}).setdefault(name, {})[seed] = series
            ran += [seed] if seed not in ran else []
            sitting = {"seeds": ran, "wall_seconds": time.perf_counter() - started,
                       "machine": machine(torch.device("cpu"), load_start, os.getloadavg()[0])}
            report = {**summarise(merged, points, main_metrics), "sittings": [*sittings, sitting],
                      "majority": majority}
            if save:
                save(report)
    return report


def sittings_of(report: dict) -> list[dict]:
    """The sittings a report's seeds ran in: which seeds, on which machine, how long (a report written before
    `--resume` existed had one, kept as `machine` and `wall_seconds`)."""
    if "sittings" in report:
        return report["sittings"]
    seeds = sorted({int(seed) for by_variant in report["points"].values() for by_seed in by_variant.values()
                    for seed in by_seed})
    return [{"seeds": seeds, "machine": report.get("machine") or {}, "wall_seconds": report.get("wall_seconds", 0)}]


def kept_points(settings: CurveSettings, previous: dict) -> tuple[dict, list[dict]]:
    """An earlier sitting's points and sittings, kept only when it ran these settings but for the seeds: a point's
    seconds and accuracy depend on every other one."""
    try:
        before = previous["settings"]
        points = {task: {name: {int(seed): series for seed, series in by_seed.items()}
                         for name, by_seed in by_variant.items()} for task, by_variant in previous["points"].items()}
        sittings = sittings_of(previous)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ConfigError("resume: the report at --output is not a curve report; give another --output") from None
    now = json.loads(json.dumps(dataclasses.asdict(settings)))  # tuples as the JSON's lists
    differ = [f"{key} {before.get(key)!r}, not {value!r}" for key, value in now.items()
              if key != "seeds" and before.get(key) != value]
    if differ:
        raise ConfigError(f"resume: the report at --output ran with {'; '.join(differ)}; give its settings, or "
                          f"another --output for a new sitting")
    return points, sittings


def check_same_machine(sittings: list[dict], here: dict) -> None:
    """Seeds from one kind of machine only: their seconds are averaged, and bf16 kernels round differently on
    different CPUs (docs/benchmarks.md 6.1). A fact an old report did not record is not compared."""
    for sitting in sittings:
        there = sitting["machine"]
        differ = [f"{key} {there[key]} here {here[key]}" for key in MACHINE_FACTS
                  if key in there and there[key] != here[key]]
        if differ:
            raise ConfigError(f"resume: {seeds_text(sitting['seeds'])} of the report at --output ran "
                              f"on another machine ({'; '.join(differ)}), so their seconds would not average with "
                              f"these; give another --output")


def summarise(settings: CurveSettings, points: dict, main_metrics: dict[str, str]) -> dict:
    """Mean and standard deviation over seeds at each evaluation, and the time-to-accuracy headline."""
    curves: dict[str, dict[str, list[dict]]] = {}
    for task_name, by_variant in points.items():
        metric = main_metrics[task_name]
        for name, by_seed in by_variant.items():
            rows = []
            for i, step in enumerate(settings.eval_at):
                at = [series[i] for series in by_seed.values() if len(series) > i]
                if not at:
                    continue
                values = [p[metric] for p in at]
                rows.append({"step": step, "seconds": statistics.mean(p["seconds"] for p in at),
                             "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1
                             else 0.0, "n": len(values)})
            curves.setdefault(task_name, {})[name] = rows
    return {"settings": dataclasses.asdict(settings), "main_metrics": main_metrics, "points": points,
            "curves": curves, "headline": {task: headline(by_variant) for task, by_variant in curves.items()},
            "fed_prompt": {task: {name: fed_summary(by_seed) for name, by_seed in by_variant.items()
                                  if "prompt_moves" in next(iter(by_seed.values()))[0]}
                           for task, by_variant in points.items()}}


def fed_summary(by_seed: dict[int, list[dict]]) -> dict[str, float]:
    """Seed means of the fed prompt's row norm at the start and the end, and of its per-token move per step and that
    move's cosine with the steepest descent, over the first and the last MOVE_WINDOW steps."""
    def window_means(key: str) -> tuple[float, float]:
        runs = [[v for p in series for v in p[key]] for series in by_seed.values()]
        return (statistics.mean(statistics.mean(r[:MOVE_WINDOW]) for r in runs),
                statistics.mean(statistics.mean(r[-MOVE_WINDOW:]) for r in runs))

    (first_moves, last_moves), (first_cosines, last_cosines) = window_means("prompt_moves"), window_means(
        "prompt_step_cosines")
    return {"start_row_norm": statistics.mean(s[0]["prompt_start_row_norm"] for s in by_seed.values()),
            "end_row_norm": statistics.mean(s[-1]["prompt_row_norm"] for s in by_seed.values()),
            "first_moves": first_moves, "last_moves": last_moves,
            "first_cosines": first_cosines, "last_cosines": last_cosines}


def first_time_at(curve: list[dict], target: float) -> float | None:
    """The first time the mean curve reaches `target`, linear between evaluations (from zero at step 0)."""
    previous_seconds, previous_value = 0.0, None
    for row in curve:
        if row["mean"] >= target:
            if previous_value is None or previous_value >= target:
                return row["seconds"]
            fraction = (target - previous_value) / (row["mean"] - previous_value)
            return previous_seconds + fraction * (row["seconds"] - previous_seconds)
        previous_seconds, previous_value = row["seconds"], row["mean"]
    return None


def value_at_time(curve: list[dict], seconds: float) -> float | None:
    """The mean curve's value after `seconds` of training, linear between evaluations; None outside them."""
    for before, after in itertools.pairwise(curve):
        if before["seconds"] <= seconds <= after["seconds"]:
            fraction = (seconds - before["seconds"]) / (after["seconds"] - before["seconds"])
            return before["mean"] + fraction * (after["mean"] - before["mean"])
    return curve[0]["mean"] if curve and curve[0]["seconds"] == seconds else None


def headline(curves: dict[str, list[dict]]) -> dict[str, Any]:
    """PT's final accuracy less one point, when each variant first reaches it, and each time over PT's; and each
    variant's accuracy at PT's final time (equal wall-clock), where its evaluations span that time."""
    if "pt" not in curves or not curves["pt"]:
        return {}
    target = curves["pt"][-1]["mean"] - 1.0
    pt_time, pt_final_time = first_time_at(curves["pt"], target), curves["pt"][-1]["seconds"]
    out: dict[str, Any] = {"target": target, "pt_seconds": pt_time, "pt_final_seconds": pt_final_time}
    for name, curve in curves.items():
        seconds = first_time_at(curve, target)
        out[name] = {"seconds": seconds, "vs_pt": seconds / pt_time if seconds is not None and pt_time else None,
                     "final": curve[-1]["mean"] if curve else None, "final_std": curve[-1]["std"] if curve else None,
                     "at_pt_time": value_at_time(curve, pt_final_time)}
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    lamp = ", ".join(f"{k}={v}" for k, v in s["lamp"].items())
    size = f"at most {s['max_eval_examples']} evaluation examples (a screening run)" if s["max_eval_examples"] \
        else "the full evaluation set"
    sittings = sittings_of(report)
    where = "; ".join(("" if len(sittings) == 1 else f"{seeds_text(sitting['seeds'])} ") + sitting_text(sitting)
                      for sitting in sittings)
    ran = sorted({seed for sitting in sittings for seed in sitting["seeds"]})
    asked = "" if ran == sorted(s["seeds"]) else f" (of {', '.join(map(str, s['seeds']))} asked for)"
    out = [f"{s['model']}, batch {s['batch_size']}, {s['steps']} steps (or a variant's own), {seeds_text(ran)}{asked}, "
           f"{size}{'; LAMP ' + lamp if lamp else ''}; {where}", ""]
    for task_name, curves in report["curves"].items():
        metric = report["main_metrics"][task_name]
        steps = s["eval_at"]
        out += [f"**{task_name}** ({metric}, mean ± std over seeds; seconds of training steps in brackets)", "",
                "| variant | " + " | ".join(f"step {step}" for step in steps) + " |",
                "|---|" + "---:|" * len(steps)]
        for name, rows in curves.items():
            cells = {r["step"]: f"{r['mean']:.1f} ± {r['std']:.1f} ({r['seconds']:.1f} s)" for r in rows}
            out.append(f"| {name} | " + " | ".join(cells.get(step, "–") for step in steps) + " |")
        head = report["headline"].get(task_name) or {}
        if head:
            out += ["", f"Time to PT's final accuracy less one point ({head['target']:.1f}):"]
            for name in curves:
                entry = head.get(name) or {}
                seconds, ratio = entry.get("seconds"), entry.get("vs_pt")
                out.append(f"- {name}: " + (f"{seconds:.0f} s, {ratio:.2f}x PT's" if seconds is not None and ratio
                                            else "not reached"))
            out += ["", f"At PT's final time ({head['pt_final_seconds']:.0f} s of training; equal wall-clock, "
                        "linear between evaluations):"]
            for name in curves:
                value = (head.get(name) or {}).get("at_pt_time")
                out.append(f"- {name}: " + (f"{value:.1f}" if value is not None else "its evaluations do not span it"))
        fed = report.get("fed_prompt", {}).get(task_name) or {}
        if fed:
            out += ["", "The prompt the model reads (seed means): row norm at the start -> the end; how far a row "
                        f"moves per step and that move's cosine with the steepest descent of the loss in those rows, "
                        f"over the first {MOVE_WINDOW} steps -> the last {MOVE_WINDOW}:"]
            out += [f"- {name}: row norm {f['start_row_norm']:.2f} -> {f['end_row_norm']:.2f}; move per step "
                    f"{f['first_moves']:.3f} -> {f['last_moves']:.3f}; cosine {f['first_cosines']:.2f} -> "
                    f"{f['last_cosines']:.2f}" for name, f in fed.items()]
        if task_name in report.get("majority", {}):
            out += ["", *robustness(report, task_name)]
        out.append("")
    return "\n".join(out)


def robustness(report: dict, task_name: str) -> list[str]:
    """Issue 36's table: each variant's final score per seed, its training loss at LOSS_STEPS (that step's batch,
    the same batches for every variant of a seed; seed means) and how many of its runs ended near chance."""
    majority, metric = report["majority"][task_name], report["main_metrics"][task_name]
    out = [f"Robustness: training loss at steps {', '.join(map(str, LOSS_STEPS))} (each that step's batch, seed "
           f"means); near chance: a final {metric} within {NEAR_CHANCE:.0f} points of the majority-class rate "
           f"({majority:.1f} %):", "",
           "| variant | final per seed | " + " | ".join(f"loss, step {s}" for s in LOSS_STEPS) + " | near chance |",
           "|---|---|" + "---:|" * (len(LOSS_STEPS) + 1)]
    for name, by_seed in report["points"][task_name].items():
        finals = [series[-1][metric] for series in by_seed.values()]
        losses = [[v for point in series for v in point["losses"]] for series in by_seed.values()]
        cells = [f"{statistics.mean(run[s - 1] for run in losses):.2f}" if all(len(run) >= s for run in losses)
                 else "–" for s in LOSS_STEPS]
        near = sum(final < majority + NEAR_CHANCE for final in finals)
        out.append(f"| {name} | {' / '.join(f'{v:.1f}' for v in finals)} | {' | '.join(cells)} | "
                   f"{near} of {len(finals)} |")
    return out


def seeds_text(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def sitting_text(sitting: dict) -> str:
    m = sitting["machine"]
    return (f"on {m.get('cpus')} x {m.get('cpu_model')}, load {m.get('load_average_start', 0):.2f} -> "
            f"{m.get('load_average_end', 0):.2f}, {sitting.get('wall_seconds', 0) / 60:.0f} min")


def chart(report: dict) -> alt.FacetChart:
    """Accuracy against seconds of training, one line per variant and a band of one standard deviation, a panel per
    task (what the README and the dashboard show)."""
    import altair as alt  # here, not at the top: `lamp bench speed|gpu` on a bare GPU machine has no altair
    import pandas as pd

    rows = [{"task": task, "variant": name, **row} for task, curves in report["curves"].items()
            for name, curve in curves.items() for row in curve]
    frame = pd.DataFrame(rows)
    frame["low"], frame["high"] = frame["mean"] - frame["std"], frame["mean"] + frame["std"]
    base = alt.Chart(frame).encode(x=alt.X("seconds:Q", title="seconds of training"),
                                   color=alt.Color("variant:N", title="variant"))
    band = base.mark_area(opacity=0.15).encode(y="low:Q", y2="high:Q")
    line = base.mark_line(point=True).encode(
        y=alt.Y("mean:Q", title="accuracy (mean of seeds)", scale=alt.Scale(zero=False)),
        tooltip=["variant:N", "step:Q", alt.Tooltip("seconds:Q", format=".0f"), alt.Tooltip("mean:Q", format=".1f"),
                 alt.Tooltip("std:Q", format=".1f")])
    return (band + line).properties(width=320, height=240).facet(column=alt.Column("task:N", title=None)) \
        .resolve_scale(y="independent")
