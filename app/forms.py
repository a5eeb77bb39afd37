"""The launch form's logic without Streamlit: parse list fields, expand a sweep, validate with the engine.

Validation is the engine's own (`RunConfig.from_flat`, `PromptConfig.check_hidden_size`), so the dashboard shows
the same message the command line would, and nothing is enqueued unless every run of the request is valid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from lamp_engine.config import ConfigError, RunConfig

INT_FIELDS = {"length", "rank", "pool", "seed"}


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


@dataclass
class LaunchRequest:
    """One form submission: base values (flat config fields) and an optional grid that makes it a sweep."""

    values: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    hidden_size: int | None = None

    @property
    def is_sweep(self) -> bool:
        return len(self.points()) > 1

    def base_config(self) -> RunConfig:
        return RunConfig.from_flat(self.values)

    def points(self) -> list[dict[str, Any]]:
        """The grid's combinations (flat overrides), one per run; [{}] for a single run."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    def configs(self) -> list[RunConfig]:
        """Every run of the request, validated; raises the engine's ConfigError for the first invalid one."""
        configs = []
        for point in self.points():
            config = RunConfig.from_flat({**self.values, **point})
            if self.hidden_size:
                config.prompt.check_hidden_size(self.hidden_size)
            configs.append(config)
        return configs


def describe_point(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "single run"


def preview_rows(request: LaunchRequest) -> list[dict[str, Any]]:
    """One row per run: what varies, prompt tokens fed to the model, and trainable prompt parameters."""
    rows = []
    for point, config in zip(request.points(), request.configs(), strict=True):
        d = request.hidden_size
        params = config.prompt.trainable_params(d, config.train.max_source_length) if d else None
        rows.append({"run": describe_point(point), "method": config.prompt.method,
                     "prompt tokens": config.prompt.prompt_tokens, "trainable params": params})
    return rows
