"""What the launch form offers: the model aliases, the task list and the presets.

Kept free of torch: the aliases' hidden sizes come from the engine's alias table, so the form can show the
trainable-parameter count before any model is loaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from lamp_engine.config import PROTOCOLS
from lamp_engine.config import default_data_dir as config_default_data_dir

OTHER_MODEL = "other (hub id or local folder)"
CUSTOM_TASK = "custom (upload CSV/JSONL)"
DEFAULT_MODEL = "minilm-l6"  # the README's first run: an offline model that learns in a minute on a CPU
FALLBACK_TASKS = ("sst2", "cb", "rte")


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
    """Form values a preset sets (flat config fields); `grid` (flat field -> values) makes it a sweep;
    `method_values` (method -> its own fields) set a method's settings whichever method the form shows (a
    protocol's LAMP Q = S)."""

    name: str
    description: str
    values: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    method_values: dict[str, dict[str, Any]] = field(default_factory=dict)


PAPER_TRAINING = {"batch_size": 16, "weight_decay": 1e-5, "max_source_length": 256}
LAMP_BALANCED = {**PAPER_TRAINING, "method": "lamp", "length": 100, "rank": 8, "pool": 4, "q_init": "balanced"}
LR_NOTE = "learning rate: the backbone family's default (the paper's 0.3 was tuned on T5)"

PRESETS: tuple[Preset, ...] = (
    Preset("LAMP (balanced Q = sqrt(S), our default)",
           "l = 100, r = 8, pool p = 4 (25 prompt tokens), Q = sqrt(S), so the trained product starts as the "
           "rank-r truncation of the vocabulary prompt P; measured as accurate as the paper's Q = S "
           "(docs/benchmarks.md). The first prompt is 25 vocabulary rows (LAMP's start, docs/paper-differences.md). "
           f"Batch 16, source 256, weight decay 1e-5 as the paper; {LR_NOTE}", LAMP_BALANCED),
    Preset("LAMP (paper, literal Q = S)",
           "l = 100, r = 8, Q = S as the paper writes it, so the trained product starts as U S^2 V^T (not P's "
           "truncation; the first prompt is still 25 vocabulary rows, the rest of P frozen beside it); "
           "pool p = 4, which the paper does not state. Batch 16, source 256, weight decay 1e-5; " + LR_NOTE,
           {**LAMP_BALANCED, "q_init": "paper"}),
    Preset("PT (Lester et al., 2021)", f"vanilla prompt tuning, l = 100; {LR_NOTE}",
           {**PAPER_TRAINING, "method": "pt", "length": 100}),
    Preset("DPT (Xiao et al., 2023)", "A (100 x 10) B (10 x d), both uniform in (-0.5, 0.5), as DPT's code",
           {**PAPER_TRAINING, "method": "dpt", "length": 100, "bottleneck": 10}),
    Preset("DePT (Shi and Lipani, 2024)", "a 60-token prompt and a low-rank update of the text's embeddings "
           "within PT's budget at l = 100, the pair at its own learning rate 1e-4, as DePT's code",
           {**PAPER_TRAINING, "method": "dept", "length": 100, "dept_length": 60, "rank": None, "pair_lr": 1e-4}),
    Preset("Residual PT (Razdaibiedina et al., 2023)", "l = 100 through a shared MLP with bottleneck 400 "
           "(the paper's 462K / 693K / 925K)", {**PAPER_TRAINING, "method": "residual", "length": 100,
                                                "bottleneck": 400}),
    Preset("paper protocol (training only)", PROTOCOLS["paper"].description, PROTOCOLS["paper"].values,
           method_values=PROTOCOLS["paper"].method_values),
    Preset("rank sweep 4-20", "LAMP at r = 4, 8, 12, 16, 20 (paper Figure 4)", LAMP_BALANCED,
           {"rank": [4, 8, 12, 16, 20]}),
    Preset("length sweep 20/100/200", "LAMP at l = 20, 100, 200", LAMP_BALANCED, {"length": [20, 100, 200]}),
    Preset("pooling sweep 1/2/4", "LAMP average pooling p = 1, 2, 4 (l/p prompt tokens)", LAMP_BALANCED,
           {"pool": [1, 2, 4]}),
)


def preset_named(name: str) -> Preset:
    return next(p for p in PRESETS if p.name == name)
