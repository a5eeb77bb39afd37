"""Run configuration: dataclasses that validate themselves, and the flat field names every front end uses.

Imports no torch, so the dashboard can validate a form and show parameter counts without loading a model. A run
is a model, a task, a method's own settings (lamp_engine/methods.py), how to train and where its data comes from.
The command line, the queue and the launch form all speak flat field names (`rank`, `lr`, `k_shot`), mapped here
to their sections; a field that belongs to another method or to the custom task only is refused by name.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lamp_engine.aliases import ALIASES
from lamp_engine.errors import ConfigError
from lamp_engine.methods import (
    METHODS,
    RETIRED_SETTINGS,
    LampConfig,
    MethodConfig,
    method_config,
    method_fields,
    not_applicable,
)
from lamp_engine.validation import bounded, described, one_of, positive, require

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "fp32", "bf16")
SWITCH = ("off", "on")
SELECT_ON = ("heldout", "validation")  # validation: the set that is reported, as the paper selects
CUSTOM_TASK = "custom"
EPOCH = "epoch"


def steps_or_epoch(text: str) -> int | str:
    """`--eval-every 50` or `--eval-every epoch`."""
    text = str(text).strip()
    if text == EPOCH:
        return EPOCH
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a number of steps nor {EPOCH!r}") from None


@dataclass(frozen=True)
class Schedule:
    """How many optimizer steps and selection evaluations a run takes (known before anything loads)."""

    total_steps: int
    steps_per_epoch: int
    eval_interval: int  # 0: only at the end
    evaluations: int  # the last one included
    warmup_steps: int = 0  # linear warm-up before the linear decay (--warmup-steps, or --warmup-ratio of the total)


@dataclass
class TrainConfig:
    """How to train: optimiser, budget, evaluation and hardware."""

    lr: float | None = described("AdamW learning rate; default depends on the backbone family (see README)", None)
    weight_decay: float = described("AdamW weight decay", 1e-5)
    batch_size: int = described("training batch size", 16, most=4096)
    steps: int | None = described("optimizer steps (overrides --epochs)", None, most=1_000_000)
    epochs: float = described("passes over the training split when --steps is not given", 1.0,
                           most=1000)
    warmup_steps: int = described("linear warm-up steps before linear decay", 0, most=1_000_000)
    warmup_ratio: float | None = described("linear warm-up over this fraction of the steps (DPT's code: 0.1); "
                                           "instead of --warmup-steps", None)
    backbone_dropout: str = described("the frozen model's dropout while training: off (the default) or on (as "
                                      "DPT's code trains T5); evaluation always runs without", "off",
                                      choices=SWITCH)
    max_grad_norm: float = described("gradient clipping norm (0 disables)", 1.0)
    eval_every: int | str = described("evaluate on the selection split every N steps, or every epoch with "
                                      "'epoch', keeping the best state (0: once, at the end)", 0,
                                      parse=steps_or_epoch, most=1_000_000)
    patience: int | None = described("stop early after this many evaluations without a better selection metric "
                                     "(needs --eval-every)", None, most=1000)
    eval_batch_size: int = described("evaluation batch size", 32, most=4096)
    max_eval_examples: int | None = described("cap on examples per evaluation split", None,
                                            most=10_000_000)
    max_source_length: int = described("tokens of source text kept (longer is truncated)", 256,
                                        most=32_768)
    max_target_length: int = described("tokens of target text kept", 16, most=4096)
    seed: int = described("random seed (data order, prompt init, sampling)", 42)
    device: str = described("auto, cpu or cuda", "auto", choices=DEVICES)
    dtype: str = described("the frozen model's weights: auto (bf16 on CUDA, fp32 on CPU), fp32, or bf16 (about 2x "
                           "faster on CPUs with avx512_bf16 or AMX); prompts train in fp32 either way", "auto",
                           choices=DTYPES)
    load_4bit: bool = described("load the frozen model in 4-bit NF4 (CUDA and bitsandbytes only)", False)
    compile: bool = described("torch.compile the frozen model", False)

    def __post_init__(self) -> None:
        if self.lr is not None:
            positive(self, "lr")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        positive(self, "batch_size", "eval_batch_size", "epochs", "max_source_length", "max_target_length")
        for name in ("steps", "max_eval_examples", "patience"):
            if getattr(self, name) is not None:
                positive(self, name)
        try:
            self.eval_every = steps_or_epoch(self.eval_every)
        except ValueError as exc:
            raise ConfigError(f"eval_every: {exc}") from None
        for name in ("warmup_steps", "max_grad_norm") + (() if self.eval_every == EPOCH else ("eval_every",)):
            require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")
        require(self.patience is None or self.eval_every != 0, "patience",
                "early stopping needs evaluations on the way; add --eval-every N or --eval-every epoch")
        if self.warmup_ratio is not None:
            require(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
            require(self.warmup_steps == 0, "warmup_ratio", "give --warmup-ratio or --warmup-steps, not both")
        one_of(self, "device", DEVICES)
        one_of(self, "dtype", DTYPES)
        one_of(self, "backbone_dropout", SWITCH)
        bounded(self)

    def schedule(self, train_examples: int) -> Schedule:
        """The run's steps and evaluations for a training split of this size."""
        per_epoch = max(1, math.ceil(train_examples / self.batch_size))
        total = self.steps or max(1, math.ceil(self.epochs * train_examples / self.batch_size))
        interval = per_epoch if self.eval_every == EPOCH else int(self.eval_every)
        on_the_way = (total - 1) // interval if interval else 0
        warmup = int(self.warmup_ratio * total) if self.warmup_ratio is not None else self.warmup_steps  # as DPT's
        return Schedule(total, per_epoch, interval, on_the_way + 1, warmup)


def custom_only(text: str, default: Any = None) -> Any:
    """A data field that only the custom task (the user's own file) reads."""
    return field(default=default, metadata={"help": f"custom task: {text}", "custom_only": True})


@dataclass
class DataConfig:
    """Where the task's examples come from and how many are used."""

    data_dir: str | None = described("folder holding the original task files (default: $LAMP_DATA_DIR, else "
                                      "../shared/data beside the checkout)", None)
    k_shot: int | None = described("few-shot: K training examples in all (the paper's 8, 16, 32), balanced over "
                                   "the classes as DePT's code: K // C of each, the rest to classes the seed picks",
                                   None)
    k_shot_per_class: bool = described("few-shot: K examples of each class instead of K in all", False)
    select_on: str = described("which split picks the best evaluation: heldout (a split held out of training) or "
                               "validation (the reported set, as the paper; the run is marked)", "heldout",
                               choices=SELECT_ON)
    selection_only: bool = described("score on the selection split only and never read the reported set: a point "
                                     "of a learning-rate search (lamp sweep --tune lr), which must not see it", False)
    max_train_examples: int | None = described("cap on training examples", None, most=100_000_000)
    train_file: str | None = custom_only("CSV or JSONL file to train on")
    eval_file: str | None = custom_only("CSV or JSONL file to evaluate on (else split from train)")
    text_column: str = custom_only("text column", "text")
    text_pair_column: str | None = custom_only("optional second text column")
    label_column: str = custom_only("label column", "label")
    verbalizers: str | None = custom_only("label=word pairs, comma separated (e.g. 0=negative,1=positive)")

    def __post_init__(self) -> None:
        for name in ("k_shot", "max_train_examples"):
            if getattr(self, name) is not None:
                positive(self, name)
        require(self.k_shot is not None or not self.k_shot_per_class, "k_shot_per_class",
                "applies to few-shot runs only; give --k-shot K too")
        one_of(self, "select_on", SELECT_ON)
        require(not (self.selection_only and self.select_on == "validation"), "selection_only",
                "a selection-only run selects on a split held out of training; drop --select-on validation (the "
                "reported set), or --selection-only")
        bounded(self)

    @classmethod
    def custom_fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.metadata.get("custom_only"))


SECTIONS: dict[str, type] = {"train": TrainConfig, "data": DataConfig}


@dataclass
class RunConfig:
    """One run: a (method, model, task, hyper-parameters, seed)."""

    model: str = described(f"model alias ({', '.join(ALIASES)}), hub id or local folder", "smollm2-135m")
    task: str = described(f"task name (see `lamp tasks`) or '{CUSTOM_TASK}' with --train-file", "sst2")
    method: MethodConfig = field(default_factory=LampConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        require(bool(self.model), "model", "must name a model alias, hub id or folder")
        require(bool(self.task), "task", "must name a task")
        if self.train.load_4bit and not self.method.loads_4bit:
            raise ConfigError(f"load_4bit: {self.method.name} cannot train on 4-bit weights (it needs them in full "
                              "precision); drop --load-4bit or choose another method")
        if self.task != CUSTOM_TASK:
            for name in DataConfig.custom_fields():
                if getattr(self.data, name) != DataConfig.__dataclass_fields__[name].default:
                    raise ConfigError(f"{name}: applies to the custom task only (--task {CUSTOM_TASK} with "
                                      f"--train-file); {self.task} brings its own data and label words")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task,
                "method": {"method": self.method.name, **self.method.settings()},
                "train": dataclasses.asdict(self.train), "data": dataclasses.asdict(self.data)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) nested dict, rejecting unknown keys by name."""
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS:
                kwargs[key] = _build(SECTIONS[key], value or {}, prefix=f"{key}.")
            elif key == "method":
                settings = dict(value or {})
                kwargs[key] = method_config(settings.pop("method", LampConfig.name), **settings)
            elif key == "prompt":  # written by releases before the method registry: every method's fields
                kwargs["method"] = _legacy_prompt_section(value or {})
            elif key in ("model", "task"):
                kwargs[key] = value
            else:
                raise ConfigError(f"{key}: unknown configuration field")
        return cls(**kwargs)

    @classmethod
    def from_stored(cls, data: dict[str, Any], where: str = "a stored run") -> RunConfig:
        """A config written by this or an earlier release (retry, resume, predict, the worker): settings since
        retired (methods.RETIRED_SETTINGS) are dropped with one warning naming them, and the run proceeds with
        today's meaning; anything else unknown is refused as in a new submission."""
        kept, retired = without_retired(data)
        if retired:
            log.warning("%s has settings this release retired: %s; %s", where, ", ".join(retired),
                        "; ".join(sorted({f"{key}: {RETIRED_SETTINGS[key]}" for key in retired})))
        return cls.from_dict(kept)

    @classmethod
    def from_flat(cls, values: dict[str, Any], other_methods_fields: str = "refuse") -> RunConfig:
        """Build from flat field names (as the command line and the dashboard form use them).

        A setting that belongs to other methods only is refused by name; a sweep over methods passes
        `other_methods_fields="drop"` so that, e.g., `pool` reaches its LAMP runs and not its PT runs.
        """
        nested: dict[str, Any] = {"train": {}, "data": {}}
        owners = {f.name: section for section, kind in SECTIONS.items() for f in fields(kind)}
        name = values.get("method", LampConfig.name)
        if name not in METHODS:
            raise ConfigError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
        settings: dict[str, Any] = {}
        for key, value in values.items():
            if key in ("model", "task"):
                nested[key] = value
            elif key == "method":
                continue
            elif key in owners:
                nested[owners[key]][key] = value
            elif key in METHODS[name].field_names():
                settings[key] = value
            elif key in method_fields() and other_methods_fields == "drop":
                continue
            else:
                raise ConfigError(not_applicable(key, name))
        nested["method"] = {"method": name, **settings}
        return cls.from_dict(nested)

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "task": self.task, "method": self.method.name,
                               **self.method.settings()}
        for section in SECTIONS:
            out.update(dataclasses.asdict(getattr(self, section)))
        return out

    def trainable_params_before_loading(self) -> int | None:
        """The method's own trainable parameters, from an alias's shape (None for a hub model not loaded yet)."""
        alias = ALIASES.get(self.model)
        return self.method.trainable_params(alias.shape, self.train.max_source_length) if alias else None

    def with_data_dir(self, data_dir: str | None) -> RunConfig:
        """A copy whose data folder is `data_dir` unless the run names its own (the caller resolves the default)."""
        if self.data.data_dir or not data_dir:
            return self
        return dataclasses.replace(self, data=dataclasses.replace(self.data, data_dir=data_dir))


@dataclass(frozen=True)
class FlatField:
    """One flat field name as the command line, the form and a sweep grid see it."""

    name: str
    kind: Callable[[str], Any]  # bool, int, float, str or the field's own parser: how to read it from text
    help: str
    section: str  # run, method, train or data


def _kind(item: dataclasses.Field) -> Callable[[str], Any]:
    """How to read the field from text: its own parser, else bool, int, float or str by its annotation."""
    if item.metadata.get("parse"):
        return item.metadata["parse"]
    text = str(item.type)
    return next((kind for kind in (bool, int, float) if kind.__name__ in text), str)


def flat_fields() -> dict[str, FlatField]:
    """Every flat field; a method setting's help names each method that has it, with its default there."""
    out = {f.name: FlatField(f.name, str, f.metadata["help"], "run") for f in fields(RunConfig)
           if f.name in ("model", "task")}
    out["method"] = FlatField("method", str, f"method: {', '.join(METHODS)} (default: {LampConfig.name})", "run")
    for name, kinds in method_fields().items():
        found = [(kind.name, next(f for f in fields(kind) if f.name == name)) for kind in kinds]
        owners: dict[str, list[str]] = {}  # one help line per distinct text and default, naming its methods
        for owner, f in found:
            owners.setdefault(f"{f.metadata['help']} (default: {f.default})", []).append(owner)
        help_text = "; ".join(f"{', '.join(names)}: {text}" for text, names in owners.items())
        out[name] = FlatField(name, _kind(found[0][1]), help_text, "method")
    for section, kind in SECTIONS.items():
        out.update({f.name: FlatField(f.name, _kind(f), f"{f.metadata['help']} (default: {f.default})", section)
                    for f in fields(kind)})
    return out


def grid_size(grid: dict[str, list[Any]], limit: int | None = None) -> int:
    """How many runs the grid makes, counted from its lengths without expanding it; a ConfigError when that is
    over `limit`, so a huge grid costs nothing before it is refused."""
    for key, choices in grid.items():
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{key}: a grid field needs a non-empty list of values, got {choices!r}")
    size = math.prod(len(choices) for choices in grid.values())
    if limit is not None and size > limit:
        shape = " x ".join(f"{len(choices)} {key}" for key, choices in grid.items())
        raise ConfigError(f"sweep: {shape} makes {size:,} runs, over the limit of {limit:,}; "
                          "give fewer values (or raise LAMP_MAX_SWEEP_RUNS)")
    return size


def expand_grid(values: dict[str, Any], grid: dict[str, list[Any]], limit: int | None = None) -> list[RunConfig]:
    """Every combination of the grid's values over the flat `values`, each one validated; a grid of more than
    `limit` runs is refused before any is built.

    A method setting reaches the runs whose method has it; one that no run's method has is refused.
    """
    grid_size(grid, limit)
    keys = list(grid)
    configs = [RunConfig.from_flat({**values, **dict(zip(keys, combo, strict=True))}, other_methods_fields="drop")
               for combo in itertools.product(*(grid[key] for key in keys))]
    methods = {config.method.name for config in configs}
    for key in {*values, *grid} & set(method_fields()):
        if not any(key in METHODS[m].field_names() for m in methods):
            raise ConfigError(not_applicable(key, ", ".join(sorted(methods))))
    return configs


@dataclass(frozen=True)
class Protocol:
    """A named set of settings a run starts from (its own flags still override them): training and data fields
    for every run, and settings of the methods that have them (e.g. LAMP's Q = S)."""

    name: str
    description: str
    values: dict[str, Any]
    method_values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def under(self, given: dict[str, Any]) -> dict[str, Any]:
        """The flat values of a run that names `given` (flat fields, e.g. from flags) under this protocol: the
        protocol's values for the run's method, overridden by `given`; a warm-up given in steps replaces the
        protocol's warm-up ratio."""
        base = {**self.values, **self.method_values.get(given.get("method", LampConfig.name), {})}
        if "warmup_steps" in given:
            base.pop("warmup_ratio", None)
        return {**base, **given}


PROTOCOLS: dict[str, Protocol] = {protocol.name: protocol for protocol in (
    Protocol("paper", "everything the paper states (section 3.3, appendix A.4): 100 epochs, AdamW lr 0.3, weight "
             "decay 1e-5, batch 16, source length 256, l = 100, r = 8 and LAMP's Q = S; and, from DPT's code, "
             "whose setup the paper follows: a linear warm-up over the first tenth of the steps, the frozen "
             "model's dropout on, an evaluation every epoch keeping the best on the validation set that is "
             "reported (the run is marked as so selected). Left open by the paper, our choices: the pool size p "
             "(4), rank classification over label words, t-SNE for Figure 6. LAMP's start stays ours (l/p "
             "vocabulary rows and a frozen remainder; docs/paper-differences.md). 0.3 was tuned on T5; on the offline "
             "causal and encoder models it stays at chance, so pass --lr there",
             {"epochs": 100.0, "lr": 0.3, "weight_decay": 1e-5, "batch_size": 16, "max_source_length": 256,
              "eval_every": EPOCH, "warmup_ratio": 0.1, "backbone_dropout": "on", "select_on": "validation"},
             {"lamp": {"length": 100, "rank": 8, "q_init": "paper"}, "pt": {"length": 100}}),
)}


def default_data_dir() -> str | None:
    """The benchmark data folder: $LAMP_DATA_DIR, else ../shared/data beside this checkout when it exists."""
    if os.environ.get("LAMP_DATA_DIR"):
        return os.environ["LAMP_DATA_DIR"]
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def without_retired(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A stored config's nested dict without its retired method settings, and their names."""
    section = "method" if "method" in data else "prompt"  # "prompt": releases before the method registry
    settings = dict(data.get(section) or {})
    retired = [key for key in settings if key in RETIRED_SETTINGS]
    if not retired:
        return data, []
    return {**data, section: {k: v for k, v in settings.items() if k not in retired}}, retired


def _legacy_prompt_section(section: dict[str, Any]) -> MethodConfig:
    """A `prompt` section of an older release, which held every method's fields: keep the chosen method's."""
    name = section.get("method", LampConfig.name)
    kind = METHODS.get(name)
    if kind is None:
        raise ConfigError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return method_config(name, **{k: v for k, v in section.items() if k in kind.field_names()})


def _build(kind: type, values: dict[str, Any], prefix: str) -> Any:
    known = {f.name for f in fields(kind)}
    for key in values:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown configuration field")
    try:
        return kind(**values)
    except TypeError as exc:  # a value of the wrong type reaching a comparison
        raise ConfigError(f"{prefix.rstrip('.')}: {exc}") from None
