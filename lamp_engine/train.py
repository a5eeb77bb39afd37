"""Training one method on a frozen backbone, with measurements, and writing its run folder.

    train(config, output_dir)  ->  RunResult (also written to output_dir/result.json)

The phases, each a function below: load the task's splits, build the model and the method, fit (AdamW with linear
warm-up and decay, gradient clipping, evaluation on the selection split every `eval_every` steps keeping the best
state), evaluate the best state on the test split, and write the run folder atomically (a staging folder renamed
into place), so a failed or invalid run leaves nothing half-written. `train_step` is the one optimiser step that
both this loop and the speed bench run.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import pickle
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from lamp_common.result import Outcome, RunResult
from lamp_engine.backbones import Backbone, Encoded, load_backbone
from lamp_engine.backbones.offline import model_shape_of
from lamp_engine.config import RunConfig, Schedule
from lamp_engine.dispersion import TOKENS_FILE, dispersion, kept_tokens, token_matrices
from lamp_engine.errors import TrainingDiverged, TrainingStateError, disk_writes
from lamp_engine.health import learning_note, majority_rate
from lamp_engine.measure import peak_memory_mb, reset_peak_memory
from lamp_engine.methods import MethodFamily
from lamp_engine.modules import MethodModule, build_method
from lamp_engine.predict import fixed_labels, text_template
from lamp_engine.tasks import Example, Splits, Task, describe_truncation, get_task
from lamp_engine.tasks.splitting import cap

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"


@dataclass
class Callbacks:
    """Hooks for a worker: the costs once known, progress and metrics as they stream, a cooperative stop, and
    checkpoints of the trainer state whenever the worker says one is due (it decides how often)."""

    on_start: Callable[[dict], None] | None = None  # the run's costs (RunResult fields) once the model is built
    on_step: Callable[[int, int, dict[str, float], float], None] | None = None  # step, total, values, seconds
    on_eval: Callable[[int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint_due: Callable[[int], bool] | None = None  # asked after every step with the step number
    on_checkpoint: Callable[[int, Path], None] | None = None  # the step and a file holding the trainer state


@dataclass
class Progress:
    """What a resumed run continues from."""

    step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict | None = None
    history: dict[str, list] = field(default_factory=lambda: {"train": [], "eval": []})
    initial_tokens: dict[str, torch.Tensor] = field(default_factory=dict)  # a soft prompt before training
    stale: int = 0  # evaluations since the best one (early stopping counts them)
    train_seconds: float = 0.0  # time spent in training steps so far (evaluations excluded), across resumes


@dataclass
class Setup:
    """The built run: model, method, optimiser and the encoded splits."""

    backbone: Backbone
    method: MethodModule
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    lr: float
    schedule: Schedule
    prompt_init: str | None  # the rule that chose a soft prompt's initial vocabulary rows
    train: list[Encoded]
    select: list[Encoded]
    test: list[Encoded]


def train(config: RunConfig, output_dir: str | Path, callbacks: Callbacks | None = None,
          resume: bool = False) -> RunResult:
    """Train one method as `config` says and write its run folder; returns its result."""
    callbacks, output_dir = callbacks or Callbacks(), Path(output_dir)
    shape = model_shape_of(config.model)  # from the alias or the config file: a misfit fails before loading
    if shape:
        config.method.check_model(shape)
    task, splits = load_splits(config)
    setup = build_model_and_method(config, splits, check_loaded=not (shape and shape.linears))
    if callbacks.on_start:
        callbacks.on_start(costs(config, setup))
    progress = restore(output_dir, setup) if resume else Progress(initial_tokens=initial_tokens(setup))
    outcome, step_seconds, peak_mb = fit(config, task, splits, setup, progress, callbacks)
    last_state = trainable_state(setup)  # what a resumed run continues from, before the best state is loaded
    metrics, examples_per_second = {}, 0.0
    stopped_early = outcome is Outcome.COMPLETED and progress.step < setup.schedule.total_steps
    if outcome is Outcome.COMPLETED:
        metrics, examples_per_second = evaluate_best(config, task, splits, setup, progress, callbacks)
    resolved = config.to_dict()
    resolved["train"]["lr"] = setup.lr
    result = RunResult(
        method=config.method.name, model=config.model, task=config.task, status=outcome, config=resolved,
        family=setup.backbone.family, **costs(config, setup), steps=progress.step,
        train_seconds=progress.train_seconds,
        step_seconds_median=statistics.median(step_seconds) if step_seconds else None, peak_memory_mb=peak_mb,
        eval_examples_per_second=examples_per_second, metrics=metrics, best_metrics=progress.best_metrics,
        main_metric=task.main_metric, history=progress.history, split_policy=splits.policy,
        early_stop_step=progress.step if stopped_early else None, truncated_examples=splits.truncated,
        prompt_init=setup.prompt_init,
        examples={"train": len(splits.train), "select": len(splits.select), "test": len(splits.test)},
        labels=fixed_labels(splits.train), source_template=text_template(task, config),
        selected_on=config.data.select_on,
        health=run_health(config, task, splits, setup, progress) if outcome is Outcome.COMPLETED else None)
    write_run_folder(output_dir, result, setup, progress.initial_tokens, trainer_state(setup, progress, last_state))
    return result


def run_health(config: RunConfig, task: Task, splits: Splits, setup: Setup, progress: Progress) -> str | None:
    """A finished run's note when it did not learn (lamp_engine/health.py), also logged for `lamp train`."""
    losses = [point["loss"] for point in progress.history["train"]]
    accuracy = progress.best_metrics.get("accuracy") if task.main_metric == "accuracy" else None
    majority = majority_rate([example.choices.index(example.target) for example in splits.select])
    note = learning_note(losses, accuracy, majority, config.method.name, setup.backbone.family)
    if note:
        log.warning(note)
    return note


# --- phase 1: the task's splits ---------------------------------------------------------------------------------

def load_splits(config: RunConfig) -> tuple[Task, Splits]:
    """The task's train, selection and test examples, capped as the config says (seeded)."""
    t = config.train
    task = get_task(config.task)
    seed_everything(t.seed)
    splits = task.load(config.data, t.seed)
    splits.train = cap(splits.train, config.data.max_train_examples, t.seed)
    splits.select = cap(splits.select, t.max_eval_examples, t.seed)
    splits.test = cap(splits.test, t.max_eval_examples, t.seed)
    return task, splits


# --- phase 2: the model and the method -------------------------------------------------------------------------

def build_model_and_method(config: RunConfig, splits: Splits, check_loaded: bool) -> Setup:
    """Load the frozen model, tokenise the splits, build the method (a soft prompt from vocabulary rows) and the
    optimiser. `check_loaded`: the model's shape was not known before it loaded (a hub model)."""
    t = config.train
    backbone = load_backbone(config.model, t)
    if check_loaded:
        config.method.check_model(backbone.shape)
    backbone.prepare(splits.train)
    encoded = {name: [backbone.encode(e) for e in getattr(splits, name)] for name in ("train", "select", "test")}
    report_truncation(splits, encoded, t.max_source_length)
    seed_everything(t.seed)
    first_batches = [[encoded["train"][i] for i in batch] for batch in
                     itertools.islice(batches(len(encoded["train"]), t.batch_size, t.seed),
                                      getattr(config.method, "gradient_batches", 0))]
    method, prompt_init = build_method(config.method, backbone, torch.Generator().manual_seed(t.seed),
                                       t.max_source_length, first_batches)
    lr = t.lr or config.method.default_lr(backbone.family)
    head = [{"params": list(backbone.head.parameters()), "lr": lr}] if backbone.head else []
    optimizer = torch.optim.AdamW([*method.param_groups(lr), *head], lr=lr, weight_decay=t.weight_decay)
    schedule = t.schedule(len(encoded["train"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_schedule(schedule.warmup_steps,
                                                                                    schedule.total_steps))
    return Setup(backbone, method, optimizer, scheduler, lr, schedule, prompt_init, **encoded)


def report_truncation(splits: Splits, encoded: dict[str, list[Encoded]], max_length: int) -> None:
    """Count the sources cut to the model's maximum, and say which in the log and the run's split policy."""
    examples = [e for name in encoded for e in getattr(splits, name)]
    cut = [e.truncated for name in encoded for e in encoded[name]]
    splits.truncated, message = describe_truncation(examples, cut, max_length)
    if message:
        log.warning(message)
        splits.policy["truncation"] = message


def costs(config: RunConfig, setup: Setup) -> dict:
    """The cost figures known as soon as the run is built (the dashboard shows them while it trains)."""
    backbone, own = setup.backbone, setup.method.num_trainable()
    head = list(backbone.head.parameters()) if backbone.head else []
    every = {id(p): p.numel() for p in (*backbone.model.parameters(), *setup.method.parameters(), *head)}
    return {"trainable_params": own + sum(p.numel() for p in head), "prompt_params": own,
            "head_params": sum(p.numel() for p in head), "total_params": sum(every.values()),
            "prompt_tokens": config.method.prompt_tokens, "hidden_size": backbone.hidden_size,
            "total_steps": setup.schedule.total_steps}


# --- phase 3: fit ----------------------------------------------------------------------------------------------

def train_step(backbone: Backbone, method: MethodModule, batch: list[Encoded], optimizer: torch.optim.Optimizer,
               max_grad_norm: float) -> float:
    """One optimiser step on one batch; returns its loss. The speed bench times exactly this function."""
    loss = backbone.loss(method, batch)
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingDiverged(f"training diverged: loss is {value}")
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value


def fit(config: RunConfig, task: Task, splits: Splits, setup: Setup, progress: Progress,
        callbacks: Callbacks) -> tuple[Outcome, list[float], float]:
    """Train to the step budget, until asked to stop, or until `patience` evaluations in a row brought no better
    selection metric; (outcome, this session's step seconds, peak MB)."""
    t, total, interval = config.train, setup.schedule.total_steps, setup.schedule.eval_interval
    order = batches(len(setup.train), t.batch_size, t.seed)
    for _ in range(progress.step):  # a resumed run sees the batches it would have seen
        next(order)
    setup.backbone.model.train(t.backbone_dropout == "on")  # the frozen model's dropout, as --backbone-dropout says
    setup.method.train()  # after the model: an adapter's own dropout follows the method's mode
    reset_peak_memory(setup.backbone.device)
    step_seconds, outcome = [], Outcome.COMPLETED
    while progress.step < total and not (t.patience and progress.stale >= t.patience):
        if callbacks.should_stop and callbacks.should_stop():
            outcome = Outcome.STOPPED
            break
        tick = time.perf_counter()
        try:
            loss = train_step(setup.backbone, setup.method, [setup.train[i] for i in next(order)], setup.optimizer,
                              t.max_grad_norm)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{exc} at step {progress.step + 1} with learning rate {setup.lr}; "
                                   "lower --lr") from None
        setup.scheduler.step()
        step_seconds.append(time.perf_counter() - tick)
        progress.train_seconds += step_seconds[-1]
        progress.step += 1
        point = {"step": progress.step, "loss": loss, "lr": setup.scheduler.get_last_lr()[0]}
        progress.history["train"].append(point)
        if callbacks.on_step:
            callbacks.on_step(progress.step, total, {"loss": loss, "lr": point["lr"]}, step_seconds[-1])
        if interval and progress.step % interval == 0 and progress.step < total:
            select_and_keep_best(config, task, splits, setup, progress, callbacks)
        if callbacks.checkpoint_due and callbacks.on_checkpoint and callbacks.checkpoint_due(progress.step):
            write_checkpoint(setup, progress, callbacks.on_checkpoint)
    return outcome, step_seconds, peak_memory_mb(setup.backbone.device)


def select_and_keep_best(config: RunConfig, task: Task, splits: Splits, setup: Setup, progress: Progress,
                         callbacks: Callbacks) -> None:
    """Evaluate on the selection split and keep the state if it is the best so far."""
    metrics, _ = evaluate(setup.backbone, setup.method, task, splits.select, setup.select,
                          config.train.eval_batch_size)
    progress.history["eval"].append({"step": progress.step, **metrics, "train_seconds": progress.train_seconds})
    if callbacks.on_eval:
        callbacks.on_eval(progress.step, {**metrics, "train_seconds": progress.train_seconds})
    if not progress.best_metrics or metrics[task.main_metric] > progress.best_metrics[task.main_metric]:
        progress.best_metrics = {**metrics, "step": progress.step}
        progress.best_state = trainable_state(setup)
        progress.stale = 0
    else:
        progress.stale += 1


# --- phase 4: evaluate the best state --------------------------------------------------------------------------

def evaluate_best(config: RunConfig, task: Task, splits: Splits, setup: Setup, progress: Progress,
                  callbacks: Callbacks) -> tuple[dict[str, float], float]:
    """A last selection evaluation (unless this step was just evaluated), then the best state's test metrics and
    evaluation speed."""
    evaluated = progress.history["eval"] and progress.history["eval"][-1]["step"] == progress.step
    if not evaluated:
        select_and_keep_best(config, task, splits, setup, progress, callbacks)
    load_trainable_state(setup, progress.best_state)
    if config.data.selection_only:  # a search point: its score is the best selection metric, nothing is reported
        return {}, 0.0
    return evaluate(setup.backbone, setup.method, task, splits.test, setup.test, config.train.eval_batch_size)


def evaluate(backbone: Backbone, method: MethodModule, task: Task, examples: list[Example],
             encoded: list[Encoded], batch_size: int) -> tuple[dict[str, float], float]:
    """The task's metrics for rank-classification predictions, and examples per second.

    Batches are formed from examples of similar length (then put back in order), so little of a batch is padding.
    """
    start, was_training, model_was_training = time.perf_counter(), method.training, backbone.model.training
    backbone.model.eval()  # no dropout while scoring, whatever --backbone-dropout says for training
    method.eval()  # an adapter's dropout, if any, is off while it is scored
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].source))
    predictions: list[str] = [""] * len(encoded)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            for index, scores in zip(chunk, backbone.choice_scores(method, [encoded[j] for j in chunk]), strict=True):
                predictions[index] = examples[index].choices[int(np.argmax(scores))]
    backbone.model.train(model_was_training)
    method.train(was_training)
    seconds = time.perf_counter() - start
    return task.score(examples, predictions), len(examples) / max(seconds, 1e-9)


# --- phase 5: the run folder -----------------------------------------------------------------------------------

def write_run_folder(output_dir: Path, result: RunResult, setup: Setup, initial_tokens: dict[str, torch.Tensor],
                     trainer_state: dict) -> None:
    """Everything into a staging folder, then renamed into place (replacing an earlier version on resume)."""
    staging = output_dir.with_name(f".{output_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with disk_writes(output_dir.parent):
            setup.method.save(staging, setup.backbone, result.config)
            if initial_tokens:  # a soft prompt: its tokens before and after, for the Dispersion view
                final_tokens = token_matrices(setup.method)
                save_file(kept_tokens(initial_tokens, final_tokens), str(staging / TOKENS_FILE))
                (staging / "dispersion.json").write_text(json.dumps(dispersion(initial_tokens, final_tokens)))
            torch.save(trainer_state, staging / STATE_FILE)
            (staging / "result.json").write_text(result.to_json())
            replace_folder(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# --- helpers ---------------------------------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(count: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless mini-batches of indices: a fresh seeded permutation each epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(count, generator=generator).tolist()
        for start in range(0, count, size):
            yield order[start:start + size]


def learning_rate_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate, then linear decay to zero at the last step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def initial_tokens(setup: Setup) -> dict[str, torch.Tensor]:
    """A soft prompt's tokens before training (kept for the Dispersion view); none for other methods."""
    if setup.method.config.family is MethodFamily.SOFT_PROMPT:
        return token_matrices(setup.method)
    return {}


def trainable_state(setup: Setup) -> dict:
    """A copy of everything training changes: the method's trainable state and the encoder's head."""
    state = {"method": setup.method.trainable_state()}
    if setup.backbone.head is not None:
        state["head"] = copy.deepcopy(setup.backbone.head.state_dict())
    return state


def load_trainable_state(setup: Setup, state: dict | None) -> None:
    if state is None:
        return
    setup.method.load_trainable_state(state.get("method") or state["prompt"])  # "prompt": runs before adapters
    if setup.backbone.head is not None:
        setup.backbone.head.load_state_dict(state["head"])


def trainer_state(setup: Setup, progress: Progress, last_state: dict | None = None) -> dict:
    """Everything a run needs to continue from this step, on any machine (resume and checkpoints)."""
    return {"optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
            "step": progress.step, "last_state": last_state or trainable_state(setup),
            "best_state": progress.best_state, "best_metrics": progress.best_metrics, "history": progress.history,
            "initial_tokens": progress.initial_tokens, "stale": progress.stale,
            "train_seconds": progress.train_seconds}


def write_checkpoint(setup: Setup, progress: Progress, deliver: Callable[[int, Path], None]) -> None:
    """The trainer state of this step in a temporary file, handed to the caller (who stores it) and removed."""
    with tempfile.TemporaryDirectory(prefix="lamp-checkpoint-") as folder:
        path = Path(folder) / STATE_FILE
        with disk_writes(Path(folder).parent):
            torch.save(trainer_state(setup, progress), path)
        deliver(progress.step, path)


def restore_optimizer(setup: Setup, saved: dict) -> None:
    """The optimiser's moments and the schedule's position as saved. Where the method's parameter groups have
    changed since (a run of a release whose option is now retired), the moments start afresh and the schedule goes
    on from the saved step."""
    shape = [len(group["params"]) for group in saved["optimizer"]["param_groups"]]
    if shape == [len(group["params"]) for group in setup.optimizer.param_groups]:
        setup.optimizer.load_state_dict(saved["optimizer"])
        setup.scheduler.load_state_dict(saved["scheduler"])
        return
    log.warning("the saved optimiser state has parameter groups of %s, which %s no longer has; its moments start "
                "afresh at step %d", shape, setup.method.config.name, saved["step"])
    setup.scheduler = torch.optim.lr_scheduler.LambdaLR(setup.optimizer, setup.scheduler.lr_lambdas,
                                                        last_epoch=saved["step"] - 1)


def load_trainer_state(path: Path, device: torch.device | str) -> dict:
    """A stored trainer state read as tensors and plain containers only (weights_only): whoever can write the
    store must not run code on every worker that resumes from it."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise TrainingStateError(f"{path.name}: refused, it holds more than tensors and plain values ({reason}); "
                                 "retry from scratch or delete the checkpoint") from None


def restore(folder: Path, setup: Setup) -> Progress:
    """Load the trainer state in `folder` (a finished or stopped run's, or a checkpoint's) to continue training."""
    saved = load_trainer_state(folder / STATE_FILE, setup.backbone.device)
    load_trainable_state(setup, saved["last_state"])
    restore_optimizer(setup, saved)
    initial = saved["initial_tokens"] if "initial_tokens" in saved else {"prompt": saved["initial_prompt"]}  # older
    return Progress(saved["step"], saved["best_metrics"], saved["best_state"], saved["history"], initial,
                    saved.get("stale", 0), saved.get("train_seconds", 0.0))
