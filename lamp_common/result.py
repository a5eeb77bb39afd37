"""A run's result: what `train()` returns, what result.json holds and what the store's run columns copy.

One dataclass, torch-free. Its field metadata says which fields the store keeps in a column of their own
(`column`) and which are costs a researcher compares between runs (`cost`, with the label the dashboard shows),
so no other module repeats a list of result keys.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

EVAL_PREFIX = "eval_"  # a metric point of an evaluation: "eval_accuracy", apart from a training point of one name
SELECTION_SPLITS = {"heldout": "held-out split", "validation": "⚑ reported set"}  # --select-on, as the views mark it


def selected_on(config: dict[str, Any] | None) -> str:
    """Which split picked a run's best evaluation (its config's data.select_on; runs before the option: held out)."""
    return ((config or {}).get("data") or {}).get("select_on") or "heldout"


class Outcome(StrEnum):
    """How the engine's training loop ended (the store maps it to a run status in one place)."""

    COMPLETED = "completed"
    STOPPED = "stopped"  # asked to stop; the partial prompt is saved, no test metrics


def _column(cost: str | None = None, compared: bool = False, default: Any = None) -> Any:
    """A field the store keeps in a run column; `cost` labels it as a cost, `compared` puts it in Compare."""
    return field(default=default, metadata={"column": True, "cost": cost, "compared": compared})


@dataclass
class RunResult:
    """Everything one run measured and wrote, in result.json's key order."""

    method: str
    model: str
    task: str
    status: Outcome
    config: dict[str, Any]
    family: str
    trainable_params: int | None = _column("trainable params", compared=True)
    prompt_tokens: int | None = _column("prompt tokens", compared=True)
    total_params: int | None = _column("total params", compared=True)
    peak_memory_mb: float | None = _column("peak memory (MB)", compared=True)
    train_seconds: float | None = _column("train time (s)", compared=True)
    step_seconds_median: float | None = _column("step time (s, median)", compared=True)
    eval_examples_per_second: float | None = _column("eval examples/s", compared=True)
    prompt_params: int | None = _column("prompt params")
    head_params: int | None = _column("head params")
    hidden_size: int | None = _column("hidden size d")
    steps: int = 0
    total_steps: int | None = _column()
    metrics: dict[str, float] = _column(default=None)
    best_metrics: dict[str, float] = _column(default=None)
    main_metric: str | None = _column()
    early_stop_step: int | None = None  # the step at which --patience ended the run, if it did
    history: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"train": [], "eval": []})
    split_policy: dict[str, str] = field(default_factory=dict)
    truncated_examples: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    prompt_init: str | None = None  # which vocabulary rows the initial prompt was drawn from (the rule)
    labels: list[str] | None = None  # the label words, when every example has the same ones (for `predict`)
    source_template: str | None = None  # "sentence: {text}" when the task has one text field
    selected_on: str = "heldout"  # "validation": the best evaluation was picked on the reported set, as the paper
    health: str | None = _column()  # "not learning: ...; try ..." for a run that went nowhere (lamp_engine/health.py)

    def __post_init__(self) -> None:
        self.status = Outcome(self.status)
        self.metrics = self.metrics or {}
        self.best_metrics = self.best_metrics or {}

    @property
    def main_metric_value(self) -> float | None:
        return self.metrics.get(self.main_metric or "")

    @classmethod
    def column_names(cls) -> tuple[str, ...]:
        """The fields the store copies into run columns of the same name."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("column"))

    @classmethod
    def costs(cls, compared_only: bool = False) -> tuple[tuple[str, str], ...]:
        """(label, field name) of the cost figures, in the order the dashboard lists them."""
        return tuple((f.metadata["cost"], f.name) for f in fields(cls)
                     if f.metadata.get("cost") and (f.metadata["compared"] or not compared_only))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": str(self.status)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """From a result.json; keys this version does not know (written by a newer one) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls.from_dict(json.loads(text))
