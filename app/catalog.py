"""What the launch form offers: model aliases with their hidden sizes, the task list and the presets.

Kept free of torch: the hidden sizes of the aliases come from the engine's config module, so the form can show
the trainable-parameter count before any model is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from lamp_engine.config import ALIAS_HIDDEN_SIZES
from lamp_engine.config import default_data_dir as config_default_data_dir

MODEL_HIDDEN_SIZES: dict[str, int] = ALIAS_HIDDEN_SIZES
OTHER_MODEL = "other (hub id or local folder)"
CUSTOM_TASK = "custom (upload CSV/JSONL)"
FALLBACK_TASKS = ("sst2", "cb", "rte")

SWEEP_FIELDS = ("method", "length", "rank", "pool", "seed", "task")


@functools.cache
def task_names() -> tuple[str, ...]:
    """Task names from the engine's registry, imported only when the form is drawn (it pulls in `datasets`)."""
    try:
        from lamp_engine.tasks import TASKS
    except ImportError:  # a broken optional dependency must not take the dashboard down
        return FALLBACK_TASKS
    return tuple(sorted(TASKS))


def default_data_dir() -> str:
    """The engine's default data folder, or "" for the form's empty text box."""
    return config_default_data_dir() or ""


@dataclass(frozen=True)
class Preset:
    """Form values a preset sets; `grid` (flat field -> values) makes it a sweep."""

    name: str
    description: str
    values: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)


PAPER_LAMP = {"method": "lamp", "length": 100, "rank": 8, "pool": 4, "q_init": "balanced", "batch_size": 16,
              "weight_decay": 1e-5, "max_source_length": 256}

PRESETS: tuple[Preset, ...] = (
    Preset("LAMP, paper defaults", "l = 100, r = 8, batch 16, max source 256, pool p = 4 (25 prompt tokens; the "
           "paper leaves p open, docs/benchmarks.md measures it); learning rate from the backbone's default (the "
           "paper's 0.3 was tuned on T5)", PAPER_LAMP),
    Preset("PT baseline", "vanilla prompt tuning, l = 100 (Lester et al. 2021)",
           {**PAPER_LAMP, "method": "pt"}),
    Preset("rank sweep 4-20", "LAMP at r = 4, 8, 12, 16, 20 (paper Figure 4)", PAPER_LAMP,
           {"rank": [4, 8, 12, 16, 20]}),
    Preset("length sweep 20/100/200", "LAMP at l = 20, 100, 200", PAPER_LAMP, {"length": [20, 100, 200]}),
    Preset("pooling sweep 1/2/4", "LAMP average pooling p = 1, 2, 4 (l/p prompt tokens)", PAPER_LAMP,
           {"pool": [1, 2, 4]}),
)


def preset_named(name: str) -> Preset:
    return next(p for p in PRESETS if p.name == name)
