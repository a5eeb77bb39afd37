"""A run as the trackers see it, from what any front end has: the config, the costs, the result; and `LocalRun`,
the snapshot source of `lamp train` (the points its callbacks see, the result at the end)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from lamp_common.result import EVAL_PREFIX, Outcome, RunResult
from lamp_engine.aliases import ALIASES
from lamp_engine.config import RunConfig
from lamp_engine.trackers.core import Point, Snapshot

OUTCOME_STATUS = {Outcome.COMPLETED: "succeeded", Outcome.STOPPED: "cancelled"}  # as the store names them


def run_tags(config: RunConfig, run_id: int | None, submitter: str | None, family: str | None) -> dict[str, str]:
    """Method, model, task, backbone family, submitter and our run id (those known)."""
    alias = ALIASES.get(config.model)
    tags = {"method": config.method.name, "model": config.model, "task": config.task,
            "backbone_family": str(family) if family else (str(alias.family) if alias else None),
            "submitted_by": submitter,
            "lamp_run_id": None if run_id is None else str(run_id)}
    return {key: value for key, value in tags.items() if value is not None}


def run_name(config: RunConfig, run_id: int | None) -> str:
    prefix = f"lamp-{run_id} " if run_id is not None else ""
    return f"{prefix}{config.method.name} {config.model}/{config.task}"


def summary_of(values: dict[str, Any], test_metrics: dict[str, float] | None) -> dict[str, float]:
    """The cost figures (RunResult's costs: trainable parameters, prompt tokens, peak memory, step and train time,
    ...) and the best prompt's test metrics ("test_accuracy"), those known."""
    summary = {name: float(values[name]) for _, name in RunResult.costs() if values.get(name) is not None}
    summary.update({f"test_{key}": float(value) for key, value in (test_metrics or {}).items()
                    if isinstance(value, (int, float))})
    return summary


class LocalRun:
    """`lamp train`'s run for the mirror: the training callbacks record points here (a list append, nothing
    more), and the mirror's thread reads copies of them."""

    def __init__(self, config: RunConfig, folder: Path) -> None:
        self.config, self.folder = config, folder
        self.started_ms = int(time.time() * 1000)
        self.points: list[Point] = []
        self.costs: dict[str, Any] = {}
        self.result: RunResult | None = None
        self.status: str | None = None
        self.lock = threading.Lock()

    def record(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        with self.lock:
            self.points += [Point(len(self.points) + index + 1, prefix + key, step, float(value))
                            for index, (key, value) in enumerate(values.items())]

    def on_start(self, costs: dict[str, Any]) -> None:
        self.costs = dict(costs)

    def on_step(self, step: int, total: int, values: dict[str, float], seconds: float) -> None:
        self.record(step, values)

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self.record(step, metrics, EVAL_PREFIX)

    def ended(self, result: RunResult | None) -> None:
        """The run is over: its result (None: it failed)."""
        self.result = result
        self.status = OUTCOME_STATUS[result.status] if result else "failed"

    def snapshot(self) -> Snapshot:
        with self.lock:
            points = list(self.points)
        result = self.result
        values = result.to_dict() if result else self.costs
        return Snapshot(
            key=self.folder.name, name=run_name(self.config, None), params=self.config.flat(),
            tags=run_tags(self.config, None, None, result.family if result else None), started_ms=self.started_ms,
            points=points, last_step=points[-1].step if points else 0,
            summary=summary_of(values, result.metrics if result else None),
            folder=self.folder if result else None, status=self.status)
