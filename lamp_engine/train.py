"""Training one soft prompt on a frozen backbone, with measurements, and writing its run folder.

    train(config, output_dir)  ->  result dict (also written to output_dir/result.json)

Order of work: validate the task and read its data, load the model, build the prompt, train with AdamW (linear
warm-up, linear decay, gradient clipping), evaluate on the selection split every `eval_every` steps keeping the
best prompt, evaluate the best prompt on the test split, then write the folder atomically (a staging folder
renamed into place), so a failed or invalid run leaves nothing half-written.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lamp_engine.backbones import Backbone, Encoded, load_backbone
from lamp_engine.backbones.offline import hidden_size_of
from lamp_engine.config import RunConfig
from lamp_engine.dispersion import dispersion
from lamp_engine.errors import TrainingDiverged
from lamp_engine.export import save_peft_adapter, save_prompt
from lamp_engine.measure import peak_memory_mb, reset_peak_memory
from lamp_engine.predict import fixed_labels, text_template
from lamp_engine.prompts import SoftPrompt, build_prompt
from lamp_engine.tasks import Example, Task, get_task

# Learning rates by backbone family. 0.3 is the paper's, tuned on T5 (large embedding norms); on the small
# Llama and BERT models here it stays at chance, 0.01 learns (see docs/benchmarks.md for the measurements).
DEFAULT_LR = {"seq2seq": 0.3, "causal": 0.01, "encoder": 0.01}
STATE_FILE = "trainer_state.pt"


@dataclass
class Callbacks:
    """Hooks for a worker: stream progress, stream metrics, stop cooperatively."""

    on_step: Callable[[int, int, dict[str, float]], None] | None = None
    on_eval: Callable[[int, dict[str, float]], None] | None = None
    should_stop: Callable[[], bool] | None = None


@dataclass
class Progress:
    """What a resumed run continues from."""

    step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_state: dict | None = None
    history: dict[str, list] = field(default_factory=lambda: {"train": [], "eval": []})
    initial_prompt: torch.Tensor | None = None


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


def evaluate(backbone: Backbone, prompt: SoftPrompt, task: Task, examples: list[Example],
             encoded: list[Encoded], batch_size: int) -> tuple[dict[str, float], float]:
    """The task's metrics for rank-classification predictions, and examples per second."""
    start, predictions = time.perf_counter(), []
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            for example, scores in zip(examples[i:i + batch_size],
                                       backbone.choice_scores(prompt, encoded[i:i + batch_size]), strict=True):
                predictions.append(example.choices[int(np.argmax(scores))])
    seconds = time.perf_counter() - start
    return task.score(examples, predictions), len(examples) / max(seconds, 1e-9)


def learning_rate_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up to the full rate, then linear decay to zero at the last step."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def train(config: RunConfig, output_dir: str | Path, callbacks: Callbacks | None = None,
          resume: bool = False) -> dict:
    """Train one prompt as `config` says and write its run folder; returns the result dict."""
    callbacks, output_dir, t = callbacks or Callbacks(), Path(output_dir), config.train
    if not config.data.data_dir and os.environ.get("LAMP_DATA_DIR"):  # the machine's own task folder
        config = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                      data_dir=os.environ["LAMP_DATA_DIR"]))
    task = get_task(config.task)
    hidden_size = hidden_size_of(config.model)
    if hidden_size:
        config.prompt.check_hidden_size(hidden_size)
    seed_everything(t.seed)
    splits = task.load(config.data, t.seed)
    splits.train = cap(splits.train, config.data.max_train_examples, t.seed)
    splits.select = cap(splits.select, t.max_eval_examples, t.seed)
    splits.test = cap(splits.test, t.max_eval_examples, t.seed)

    backbone = load_backbone(config.model, t)
    backbone.prepare(splits.train)
    config.prompt.check_hidden_size(backbone.hidden_size)
    seed_everything(t.seed)
    init = backbone.vocabulary_rows(config.prompt.length, torch.Generator().manual_seed(t.seed))
    prompt = build_prompt(config.prompt, init, t.max_source_length).to(backbone.device)
    with torch.no_grad():
        initial_prompt = prompt().detach().float().cpu()
    lr = t.lr or DEFAULT_LR[backbone.family]
    trainable = [*prompt.parameters(), *(backbone.head.parameters() if backbone.head else [])]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=t.weight_decay)

    train_enc = [backbone.encode(e) for e in splits.train]
    select_enc = [backbone.encode(e) for e in splits.select]
    test_enc = [backbone.encode(e) for e in splits.test]
    splits.truncated = sum(e.truncated for e in train_enc + select_enc + test_enc)
    total_steps = t.steps or max(1, math.ceil(t.epochs * len(train_enc) / t.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_schedule(t.warmup_steps, total_steps))

    progress = Progress(initial_prompt=initial_prompt)
    if resume:
        progress = restore(output_dir, prompt, backbone, optimizer, scheduler)

    def select_and_keep_best(step: int) -> None:
        metrics, _ = evaluate(backbone, prompt, task, splits.select, select_enc, t.eval_batch_size)
        progress.history["eval"].append({"step": step, **metrics})
        if callbacks.on_eval:
            callbacks.on_eval(step, metrics)
        if not progress.best_metrics or metrics[task.main_metric] > progress.best_metrics[task.main_metric]:
            progress.best_metrics = {**metrics, "step": step}
            progress.best_state = trainable_state(prompt, backbone)

    order = batches(len(train_enc), t.batch_size, t.seed)
    for _ in range(progress.step):  # a resumed run sees the batches it would have seen
        next(order)
    prompt.train()
    reset_peak_memory(backbone.device)
    step_seconds, stopped, started = [], False, time.perf_counter()
    while progress.step < total_steps:
        if callbacks.should_stop and callbacks.should_stop():
            stopped = True
            break
        tick = time.perf_counter()
        loss = backbone.loss(prompt, [train_enc[i] for i in next(order)])
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training diverged: loss is {loss.item()} at step {progress.step + 1} "
                                   f"with learning rate {lr}; lower --lr")
        loss.backward()
        if t.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - tick)
        progress.step += 1
        point = {"step": progress.step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}
        progress.history["train"].append(point)
        if callbacks.on_step:
            callbacks.on_step(progress.step, total_steps, {"loss": point["loss"], "lr": point["lr"]})
        if t.eval_every and progress.step % t.eval_every == 0 and progress.step < total_steps:
            select_and_keep_best(progress.step)
    train_seconds = time.perf_counter() - started
    peak_mb = peak_memory_mb(backbone.device)

    last_state = trainable_state(prompt, backbone)
    metrics, examples_per_second = {}, 0.0
    if not stopped:
        select_and_keep_best(progress.step)
        load_trainable_state(prompt, backbone, progress.best_state)
        metrics, examples_per_second = evaluate(backbone, prompt, task, splits.test, test_enc, t.eval_batch_size)

    resolved = config.to_dict()
    resolved["train"]["lr"] = lr
    result = {
        "method": config.prompt.method, "model": config.model, "task": config.task,
        "status": "stopped" if stopped else "completed", "config": resolved, "family": backbone.family,
        "trainable_params": prompt.num_trainable() + head_params(backbone),
        "prompt_params": prompt.num_trainable(), "head_params": head_params(backbone),
        "total_params": backbone.total_params() + prompt.num_trainable() + head_params(backbone),
        "prompt_tokens": config.prompt.prompt_tokens, "hidden_size": backbone.hidden_size,
        "steps": progress.step, "total_steps": total_steps,
        "train_seconds": train_seconds,
        "step_seconds_median": statistics.median(step_seconds) if step_seconds else None,
        "peak_memory_mb": peak_mb, "eval_examples_per_second": examples_per_second,
        "metrics": metrics, "best_metrics": progress.best_metrics, "main_metric": task.main_metric,
        "history": progress.history, "split_policy": splits.policy, "truncated_examples": splits.truncated,
        "examples": {"train": len(splits.train), "select": len(splits.select), "test": len(splits.test)},
        "labels": fixed_labels(splits.train), "source_template": text_template(task, config),
    }
    with torch.no_grad():
        final_prompt = prompt().detach().float().cpu()
    write_run_folder(output_dir, result, prompt, backbone, progress.initial_prompt, final_prompt,
                     {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "step": progress.step, "last_state": last_state, "best_state": progress.best_state,
                      "best_metrics": progress.best_metrics, "history": progress.history,
                      "initial_prompt": progress.initial_prompt})
    return result


def cap(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, a seeded sample when there are more."""
    if limit is None or len(examples) <= limit:
        return examples
    return random.Random(seed).sample(examples, limit)


def head_params(backbone: Backbone) -> int:
    return sum(p.numel() for p in backbone.head.parameters()) if backbone.head else 0


def trainable_state(prompt: SoftPrompt, backbone: Backbone) -> dict:
    state = {"prompt": copy.deepcopy(prompt.state_dict())}
    if backbone.head is not None:
        state["head"] = copy.deepcopy(backbone.head.state_dict())
    return state


def load_trainable_state(prompt: SoftPrompt, backbone: Backbone, state: dict | None) -> None:
    if state is None:
        return
    prompt.load_state_dict(state["prompt"])
    if backbone.head is not None:
        backbone.head.load_state_dict(state["head"])


def restore(folder: Path, prompt: SoftPrompt, backbone: Backbone, optimizer, scheduler) -> Progress:
    """Load a finished or stopped run's last parameters and optimiser state to continue training."""
    saved = torch.load(folder / STATE_FILE, map_location=backbone.device, weights_only=False)
    load_trainable_state(prompt, backbone, saved["last_state"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return Progress(saved["step"], saved["best_metrics"], saved["best_state"], saved["history"],
                    saved["initial_prompt"])


def write_run_folder(output_dir: Path, result: dict, prompt: SoftPrompt, backbone: Backbone,
                     initial_prompt: torch.Tensor, final_prompt: torch.Tensor, trainer_state: dict) -> None:
    """Everything into a staging folder, then renamed into place (replacing an earlier version on resume)."""
    staging = output_dir.with_name(f".{output_dir.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_prompt(staging, prompt, backbone.head, result["config"])
        if backbone.family in ("seq2seq", "causal") and result["method"] != "dept":
            save_peft_adapter(staging / "peft", final_prompt, backbone.family, backbone.model.config, result["model"])
        (staging / "dispersion.json").write_text(json.dumps(dispersion(initial_prompt, final_prompt)))
        torch.save(trainer_state, staging / STATE_FILE)
        (staging / "result.json").write_text(json.dumps(result, indent=2))
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
