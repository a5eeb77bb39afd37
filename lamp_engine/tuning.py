"""A learning-rate search: each method at its own best rate, chosen on held-out data only.

One seed trains at every rate of the method's grid (the registry's `lr_grid`) as a selection-only run, which never
reads the reported set; the rate with the best selection score wins; the final seeds then train at that rate and
are scored on the reported set. The bench (in process) and the worker (through the queue) both use these
functions, so the choice is made one way. No torch here: the dashboard and the store import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError


@dataclass(frozen=True)
class LrChoice:
    """The rate a search chose and every grid point's selection score (what the finals carry)."""

    lr: float
    scores: dict[float, float]  # rate -> best selection score of its run
    metric: str  # the task's main metric, on the selection split

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_lr": self.lr, "grid": [[lr, score] for lr, score in sorted(self.scores.items())],
                "metric": self.metric, "split": "heldout"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LrChoice:
        return cls(float(data["chosen_lr"]), {float(lr): score for lr, score in data["grid"]}, data["metric"])

    def label(self) -> str:
        """How the tables and Compare name it: "lr 1e-3, tuned over 4"."""
        return tuned_label(self.lr, len(self.scores))


def tuned_label(lr: float, points: int) -> str:
    return f"lr {lr:.0e}".replace("e-0", "e-").replace("e+0", "e") + f", tuned over {points}"


def check_searchable(config: RunConfig) -> None:
    """A search selects on a split held out of training; a config that selects on the reported set cannot."""
    if config.data.select_on == "validation":
        raise ConfigError("tune: a learning-rate search selects on a split held out of training; drop "
                          "--select-on validation (the reported set) or the search")


def search_configs(config: RunConfig) -> list[RunConfig]:
    """The grid's selection-only runs of `config` (its seed), one per rate of the method's family."""
    check_searchable(config)
    flat = config.flat()
    return [RunConfig.from_flat({**flat, "lr": lr, "selection_only": True}) for lr in config.method.lr_grid()]


def search_key(config: RunConfig) -> str:
    """What a search point shares with the others of its search: everything but the rate."""
    flat = {k: v for k, v in config.flat().items() if k != "lr"}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def seed_groups(configs: list[RunConfig]) -> list[list[RunConfig]]:
    """The configs grouped by everything but the seed and the rate, in order: one search per group."""
    groups: dict[str, list[RunConfig]] = {}
    for config in configs:
        groups.setdefault(search_key(RunConfig.from_flat({**config.flat(), "seed": 0})), []).append(config)
    return list(groups.values())


def choose_lr(scores: dict[float, float | None], metric: str) -> LrChoice:
    """The rate with the best selection score (a tie goes to the lower rate); points without a score (failed
    runs) are left out, and a search with none is refused."""
    scored = {lr: score for lr, score in scores.items() if score is not None}
    if not scored:
        raise ConfigError("tune: no point of the learning-rate search finished with a selection score; see its "
                          "runs' errors")
    best = max(sorted(scored), key=lambda lr: scored[lr])  # max keeps the first of equals: the lower rate
    return LrChoice(best, scored, metric)


def final_configs(search_point: RunConfig, choice: LrChoice, seeds: list[int]) -> list[RunConfig]:
    """The final runs: the searched config at the chosen rate, one per seed, scored on the reported set."""
    flat = search_point.flat()
    return [RunConfig.from_flat({**flat, "lr": choice.lr, "seed": seed, "selection_only": False}) for seed in seeds]
