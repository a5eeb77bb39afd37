"""Run configuration: dataclasses that validate themselves, and the trainable-parameter formulas.

Imports no torch, so the dashboard can validate a form and show parameter counts without loading a model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lamp_engine.errors import ConfigError

METHODS = ("pt", "lamp", "dpt", "residual", "dept")
Q_INITS = ("paper", "balanced")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")
FAMILIES = ("seq2seq", "causal", "encoder")
# Hidden size d of the offline model aliases (lamp_engine/backbones/offline.py builds them), known without torch
# so a rank can be checked against min(l, d), and a form can count parameters, before any model is loaded.
ALIAS_HIDDEN_SIZES = {"smollm2-135m": 576, "minilm-l6": 384, "tiny-t5": 64}


def _help(text: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its command-line help text."""
    return field(metadata={"help": text}, **kwargs)


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(value is not None and value > 0, name, f"must be positive, got {value!r}")


@dataclass
class PromptConfig:
    """Which soft-prompt method, and its shape."""

    method: str = _help("soft-prompt method: " + ", ".join(METHODS), default="lamp")
    length: int = _help("prompt length l (rows of the initial prompt)", default=100)
    rank: int = _help("rank r of LAMP's truncated SVD, DPT's bottleneck b and DePT's low-rank pair", default=8)
    pool: int = _help("LAMP pooling block p: the model sees l/p prompt tokens (1: no pooling)", default=4)
    q_init: str = _help(
        "LAMP singular-value init: 'balanced' (Q = sqrt(S), first prompt = rank-r SVD of P) or 'paper' (Q = S)",
        default="balanced",
    )
    attention_pool: bool = _help("LAMP: self-attention pooling (paper appendix A.1) instead of averaging",
                                 default=False)
    bottleneck: int = _help("residual: hidden width of the reparameterising MLP", default=400)
    dept_length: int = _help("DePT: length m of its shorter prompt", default=60)

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "method",
                 f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        _positive(self, "length", "rank", "pool", "bottleneck", "dept_length")
        _require(self.q_init in Q_INITS, "q_init", f"must be one of {', '.join(Q_INITS)}, got {self.q_init!r}")
        if self.method == "lamp":
            _require(self.rank <= self.length, "rank", f"rank {self.rank} exceeds the prompt length {self.length}")
            _require(self.length % self.pool == 0, "pool",
                     f"prompt length {self.length} is not divisible by pool size {self.pool}; use a length that "
                     f"is a multiple of {self.pool}, or pool 1 (no pooling)")

    def check_hidden_size(self, hidden_size: int) -> None:
        """Checks that need the model's hidden size d (known once the model's config is read)."""
        if self.method == "lamp":
            _require(self.rank <= min(self.length, hidden_size), "rank",
                     f"rank {self.rank} exceeds min(length {self.length}, hidden size {hidden_size})")

    @property
    def prompt_tokens(self) -> int:
        """How many prompt rows are prepended to the model's input."""
        if self.method == "lamp":
            return self.length // self.pool
        if self.method == "dept":
            return self.dept_length
        return self.length

    def trainable_params(self, hidden_size: int, max_source_length: int = 256) -> int:
        """Trainable parameters of the prompt alone (paper formulas; DESIGN.md section 2)."""
        l, r, d = self.length, self.rank, hidden_size
        if self.method == "pt":
            return l * d
        if self.method == "lamp":
            attention = d * (l // self.pool) if self.attention_pool else 0
            return l * r + r + r * d + attention
        if self.method == "dpt":
            return l * r + r * d
        if self.method == "residual":
            h = self.bottleneck
            return l * d + (d * h + h) + (h * d + d) + 2 * d
        return self.dept_length * d + max_source_length * r + r * d  # dept


@dataclass
class TrainConfig:
    """How to train: optimiser, budget, evaluation and hardware."""

    lr: float | None = _help("AdamW learning rate; default depends on the backbone family (see README)",
                             default=None)
    weight_decay: float = _help("AdamW weight decay", default=1e-5)
    batch_size: int = _help("training batch size", default=16)
    steps: int | None = _help("optimizer steps (overrides --epochs)", default=None)
    epochs: float = _help("passes over the training split when --steps is not given", default=1.0)
    warmup_steps: int = _help("linear warm-up steps before linear decay", default=0)
    max_grad_norm: float = _help("gradient clipping norm (0 disables)", default=1.0)
    eval_every: int = _help("evaluate on the selection split every N steps (0: only at the end)", default=0)
    eval_batch_size: int = _help("evaluation batch size", default=32)
    max_eval_examples: int | None = _help("cap on examples per evaluation split", default=None)
    max_source_length: int = _help("tokens of source text kept (longer is truncated)", default=256)
    max_target_length: int = _help("tokens of target text kept", default=16)
    seed: int = _help("random seed (data order, prompt init, sampling)", default=42)
    device: str = _help("auto, cpu or cuda", default="auto")
    dtype: str = _help("the frozen model's weights: auto (bf16 on CUDA, fp32 on CPU), fp32, or bf16 (about 2x "
                       "faster on CPUs with avx512_bf16 or AMX); prompts train in fp32 either way", default="auto")
    load_4bit: bool = _help("load the frozen model in 4-bit NF4 (CUDA and bitsandbytes only)", default=False)
    compile: bool = _help("torch.compile the frozen model", default=False)

    def __post_init__(self) -> None:
        if self.lr is not None:
            _positive(self, "lr")
        _require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _positive(self, "batch_size", "eval_batch_size", "epochs", "max_source_length", "max_target_length")
        if self.steps is not None:
            _positive(self, "steps")
        if self.max_eval_examples is not None:
            _positive(self, "max_eval_examples")
        _require(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _require(self.max_grad_norm >= 0, "max_grad_norm", f"must be >= 0, got {self.max_grad_norm}")
        _require(self.eval_every >= 0, "eval_every", f"must be >= 0, got {self.eval_every}")
        _require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _require(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


def default_data_dir() -> str | None:
    """The benchmark data folder: $LAMP_DATA_DIR, else ../shared/data beside this checkout when it exists."""
    if os.environ.get("LAMP_DATA_DIR"):
        return os.environ["LAMP_DATA_DIR"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


@dataclass
class DataConfig:
    """Where the task's examples come from and how many are used."""

    data_dir: str | None = _help("folder holding the original task files (default: $LAMP_DATA_DIR)", default=None)
    k_shot: int | None = _help("few-shot: K training examples (per class where the task has classes)",
                               default=None)
    max_train_examples: int | None = _help("cap on training examples", default=None)
    train_file: str | None = _help("custom task: CSV or JSONL file to train on", default=None)
    eval_file: str | None = _help("custom task: CSV or JSONL file to evaluate on (else split from train)",
                                  default=None)
    text_column: str = _help("custom task: text column", default="text")
    text_pair_column: str | None = _help("custom task: optional second text column", default=None)
    label_column: str = _help("custom task: label column", default="label")
    verbalizers: str | None = _help("custom task: label=word pairs, comma separated (e.g. 0=negative,1=positive)",
                                    default=None)

    def __post_init__(self) -> None:
        for name in ("k_shot", "max_train_examples"):
            if getattr(self, name) is not None:
                _positive(self, name)


@dataclass
class RunConfig:
    """One run: a (method, model, task, hyper-parameters, seed)."""

    model: str = _help("model alias (smollm2-135m, minilm-l6, tiny-t5), hub id or local folder",
                       default="smollm2-135m")
    task: str = _help("task name (see `lamp tasks`) or 'custom' with --train-file", default="sst2")
    prompt: PromptConfig = field(default_factory=PromptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        _require(bool(self.model), "model", "must name a model alias, hub id or folder")
        _require(bool(self.task), "task", "must name a task")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) nested dict, rejecting unknown keys by name."""
        sections = {"prompt": PromptConfig, "train": TrainConfig, "data": DataConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value or {}, prefix=f"{key}.")
            elif key in ("model", "task"):
                kwargs[key] = value
            else:
                raise ConfigError(f"{key}: unknown configuration field")
        return cls(**kwargs)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> RunConfig:
        """Build from flat field names (as the command line and the dashboard form use them)."""
        nested: dict[str, Any] = {"prompt": {}, "train": {}, "data": {}}
        owners = {f.name: section for section, kind in SECTIONS.items() for f in fields(kind)}
        for key, value in values.items():
            if key in ("model", "task"):
                nested[key] = value
            elif key in owners:
                nested[owners[key]][key] = value
            else:
                raise ConfigError(f"{key}: unknown configuration field")
        return cls.from_dict(nested)

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "task": self.task}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out


SECTIONS: dict[str, type] = {"prompt": PromptConfig, "train": TrainConfig, "data": DataConfig}


def _build(kind: type, values: dict[str, Any], prefix: str) -> Any:
    known = {f.name for f in fields(kind)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown configuration field")
    try:
        return kind(**values)
    except TypeError as exc:  # a value of the wrong type reaching a comparison
        raise ConfigError(f"{prefix.rstrip('.')}: {exc}") from None
