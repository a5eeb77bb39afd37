"""The launch form's logic without Streamlit: parse list fields, expand a sweep, validate with the engine.

Validation and sweep expansion are the engine's own (`lamp_engine.config.expand_grid`), so the dashboard shows the
same message the command line would, and nothing is enqueued unless every run of the request is valid.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from lamp_common.errors import LampError
from lamp_engine.aliases import ModelShape
from lamp_engine.config import ConfigError, RunConfig, expand_grid
from lamp_engine.tuning import check_searchable, seed_groups
from store.settings import MB, max_sweep_runs, max_upload_mb


def parse_list(name: str, text: str, kind: type = int) -> list[Any]:
    """'4, 8,12' -> [4, 8, 12]; a message naming the field when an item is not a `kind`."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{name}: give at least one value (comma separated)")
    try:
        return [kind(item) for item in items]
    except ValueError:
        kind_name = "whole numbers" if kind is int else "values"
        raise ConfigError(f"{name}: {text!r} is not a list of {kind_name} separated by commas") from None


def upload_refusal(name: str, size: int) -> str | None:
    """One line refusing an upload above LAMP_MAX_UPLOAD_MB, from its size alone (before its bytes are read);
    None when it fits. Streamlit's own limit (set by `lamp up`) refuses it earlier; this holds wherever else the
    dashboard is started."""
    limit = max_upload_mb()
    if size <= limit * MB:
        return None
    return (f"train_file: {name} has {size / MB:,.1f} MB, over the upload limit of {limit} MB; upload a smaller "
            "file (LAMP_MAX_UPLOAD_MB sets the limit)")


@dataclass
class LaunchRequest:
    """One form submission: base values (flat config fields) and an optional grid that makes it a sweep."""

    values: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    shape: ModelShape | None = None  # the model's, where known before loading (an alias, or a hub model's d)
    tune_lr: bool = False  # a learning-rate search first; the runs then train at the chosen rate
    trackers: dict[str, bool] = field(default_factory=dict)  # the trackers ticked or not (those workers offer)

    @property
    def is_sweep(self) -> bool:
        return len(self.configs) > 1

    def search_plan(self) -> str:
        """What the search queues first, in words, for the form (one line per search)."""
        groups = seed_groups(self.configs)
        rates = {", ".join(f"{lr:g}" for lr in group[0].method.lr_grid()) for group in groups}
        return (f"first {sum(len(g[0].method.lr_grid()) for g in groups)} search runs ({len(groups)} search"
                f"{'es' if len(groups) > 1 else ''} over lr {' / '.join(sorted(rates))}, on seed "
                f"{groups[0][0].train.seed}, scored on the selection split only); then the runs below at each "
                "search's best rate")

    def points(self) -> list[dict[str, Any]]:
        """The grid's combinations (flat overrides), one per run; [{}] for a single run."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    @cached_property
    def configs(self) -> list[RunConfig]:
        """Every run of the request, validated once; raises the engine's ConfigError for the first invalid one."""
        configs = expand_grid(self.values, self.grid, limit=max_sweep_runs())
        for config in configs:
            if self.shape:
                config.method.check_model(self.shape)
            if self.tune_lr:
                check_searchable(config)
        return configs


def describe_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "single run"


def training_examples(config: RunConfig) -> int | None:
    """How many examples the run will train on, read from its task as the engine reads it (no model, no torch);
    None when the data cannot be read here (a hub task offline, a missing file): the run says why when it starts."""
    from lamp_engine.tasks import get_task

    try:
        return len(get_task(config.task).load(config.data, config.train.seed).train)
    except LampError:
        return None


def preview_rows(request: LaunchRequest,
                 examples_of: Callable[[RunConfig], int | None] = training_examples) -> list[dict[str, Any]]:
    """One row per run: what varies, prompt tokens fed to the model, trainable parameters, and how many optimizer
    steps and evaluations it will take."""
    rows = []
    for point, config in zip(request.points(), request.configs, strict=True):
        shape = request.shape
        params = config.method.trainable_params(shape, config.train.max_source_length) if shape else None
        examples = examples_of(config)
        schedule = config.train.schedule(examples) if examples else None
        rows.append({"run": describe_point(point), "method": config.method.name,
                     "prompt tokens": config.method.prompt_tokens, "trainable params": params,
                     "train examples": examples, "steps": schedule.total_steps if schedule else None,
                     "evaluations": schedule.evaluations if schedule else None})
    return rows
