"""The method registry: one entry per method, holding everything other layers need to know of it, without torch.

Each entry is the method's config dataclass. Its fields are the method's own settings with their defaults (what
the command line, the launch form and a sweep accept for it, and nothing else); its class attributes are the
method's facts (family, where its module lives, whether it exports as a PEFT adapter); its methods give the
parameter formula, the number of prompt tokens the model reads and its default learning rate. Adding a method
means one module under `lamp_engine/prompts/` (or `lamp_engine/adapters/`), one entry here and its tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from lamp_engine.aliases import BackboneFamily, ModelShape
from lamp_engine.errors import ConfigError
from lamp_engine.validation import bounded, described, one_of, positive, require

Q_INITS = ("paper", "balanced")

# Settings that earlier releases had and this one retired, with what a stored run that has them now does. Reading a
# stored run (retry, resume, predict, the worker) drops them with one warning; a new submission is refused.
RETIRED_SETTINGS: dict[str, str] = {
    name: "a research option of LAMP's (docs/benchmarks.md), now an ablation of `lamp bench curve` "
          "(bench/ablations.py); the run proceeds as today's LAMP"
    for name in ("factor_lr", "prompt_scale", "pool_init", "residual")
} | {"init_vocabulary": "the initial prompt is drawn from the 5,000 most frequent ordinary tokens, as the paper's"}


class MethodFamily(StrEnum):
    SOFT_PROMPT = "soft prompt"
    WEIGHT_ADAPTER = "weight adapter"
    FULL_FINE_TUNING = "full fine-tuning"


# The learning rates a search (`lamp sweep --tune lr`, `lamp bench table --tune-lr`) tries, by family: each
# family's rates sit a decade or more apart from the others', so one grid for all would waste most of its points.
LR_GRIDS: dict[MethodFamily, tuple[float, ...]] = {
    MethodFamily.SOFT_PROMPT: (3e-3, 1e-2, 3e-2, 3e-1),  # 3e-1: the paper's rate on T5
    MethodFamily.WEIGHT_ADAPTER: (1e-4, 3e-4, 1e-3, 3e-3),
    MethodFamily.FULL_FINE_TUNING: (1e-5, 3e-5, 1e-4),
}


def shape_of(model: ModelShape | int) -> ModelShape:
    """A model's shape, or the hidden size alone where that is all a formula needs (a form's d, a test's)."""
    return model if isinstance(model, ModelShape) else ModelShape(hidden_size=model)


@dataclass
class MethodConfig:
    """A method's settings (dataclass fields) and facts (class attributes); validates itself on creation."""

    name: ClassVar[str]
    title: ClassVar[str]  # how the README and the dashboard name it, with its source
    family: ClassVar[MethodFamily]
    module: ClassVar[str]  # "package.module:Class" of its torch module, imported only when a run builds it
    exports_peft: ClassVar[bool]  # whether the run folder gets a PEFT adapter that reproduces our outputs
    loads_4bit: ClassVar[bool] = True  # whether it can train on a 4-bit NF4 backbone (QLoRA-style)
    # AdamW learning rate by backbone family when --lr is not given (a family's own scale, see the README).
    default_lrs: ClassVar[dict[BackboneFamily, float]]

    def check_model(self, shape: ModelShape) -> None:
        """Checks that need the model's shape, done once it is known (before the weights load where it can be)."""

    @property
    def prompt_tokens(self) -> int:
        """How many prompt rows the model reads in front of the text."""
        raise NotImplementedError

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int | None:
        """The method's own trainable parameters (the paper's formulas, Table 1); None where the model's shape is
        not known well enough yet (an adapter on a hub model before it loads)."""
        raise NotImplementedError

    def default_lr(self, backbone_family: BackboneFamily) -> float:
        return self.default_lrs[backbone_family]

    def lr_grid(self) -> tuple[float, ...]:
        """The learning rates a search over this method's rate tries (its family's grid)."""
        return LR_GRIDS[self.family]

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass
class SoftPromptConfig(MethodConfig):
    """Methods that prepend trained rows to the input embeddings, starting from l vocabulary rows."""

    family: ClassVar[MethodFamily] = MethodFamily.SOFT_PROMPT
    exports_peft: ClassVar[bool] = True
    # 0.3 is the paper's, tuned on T5 (large embedding norms); on the small Llama and BERT models here it stays at
    # chance, 0.01 learns (docs/benchmarks.md has the measurements).
    default_lrs: ClassVar[dict[BackboneFamily, float]] = {BackboneFamily.SEQ2SEQ: 0.3, BackboneFamily.CAUSAL: 0.01,
                                                          BackboneFamily.ENCODER: 0.01}

    length: int = described("prompt length l (rows of the initial prompt)", 100, most=4096)

    def __post_init__(self) -> None:
        positive(self, "length")
        bounded(self)

    @property
    def prompt_tokens(self) -> int:
        return self.length


@dataclass
class PromptTuningConfig(SoftPromptConfig):
    name: ClassVar[str] = "pt"
    title: ClassVar[str] = "Prompt tuning (Lester et al., 2021)"
    module: ClassVar[str] = "lamp_engine.prompts.pt:PromptTuning"

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int:
        return self.length * shape_of(model).hidden_size


@dataclass
class LampConfig(SoftPromptConfig):
    name: ClassVar[str] = "lamp"
    title: ClassVar[str] = "LAMP (Lan et al., NAACL 2025)"
    module: ClassVar[str] = "lamp_engine.prompts.lamp:Lamp"
    # On encoders 0.01 moves V's entries (about 1/sqrt(d)) by a quarter of their size per Adam step: mpnet-base
    # stayed at the majority class there with the default seed, and learns at 0.003 with every seed tried, which
    # costs minilm-l6 about a point on SST-2 (docs/benchmarks.md 6.5).
    default_lrs: ClassVar[dict[BackboneFamily, float]] = {**SoftPromptConfig.default_lrs,
                                                          BackboneFamily.ENCODER: 0.003}

    rank: int = described("rank r of the truncated SVD", 8, most=4096)
    pool: int = described("average-pooling block p: the model reads l/p prompt tokens (1: no pooling)", 4,
                           most=4096)
    q_init: str = described("singular-value init: 'balanced' (Q = sqrt(S): M I starts as the rank-r SVD of P) "
                            "or 'paper' (Q = S)", "balanced", choices=Q_INITS)
    attention_pool: bool = described("self-attention pooling (paper appendix A.1) instead of averaging",
                                     False)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "rank", "pool")
        one_of(self, "q_init", Q_INITS)
        require(self.rank <= self.length, "rank", f"rank {self.rank} exceeds the prompt length {self.length}")
        require(self.length % self.pool == 0, "pool",
                f"prompt length {self.length} is not divisible by pool size {self.pool}; use a length that is a "
                f"multiple of {self.pool}, or pool 1 (no pooling)")

    def check_model(self, shape: ModelShape) -> None:
        require(self.rank <= min(self.length, shape.hidden_size), "rank",
                f"rank {self.rank} exceeds min(length {self.length}, hidden size {shape.hidden_size})")

    @property
    def prompt_tokens(self) -> int:
        return self.length // self.pool

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int:
        l, r, d = self.length, self.rank, shape_of(model).hidden_size
        attention = d * (l // self.pool) if self.attention_pool else 0
        return l * r + r + r * d + attention


@dataclass
class DecomposedPromptConfig(SoftPromptConfig):
    """DPT as its authors' code sets it (XYaoooo/DPT, options.py): bottleneck b = 10, both factors uniform in
    (-0.5, 0.5); l*b + b*d parameters, the paper's 6K / 9K / 11K on T5-small / base / large."""

    name: ClassVar[str] = "dpt"
    title: ClassVar[str] = "DPT, decomposed prompt tuning (Xiao et al., 2023)"
    module: ClassVar[str] = "lamp_engine.prompts.dpt:DecomposedPrompt"

    bottleneck: int = described("bottleneck b of the low-rank product A (l x b) B (b x d)", 10, most=4096)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "bottleneck")

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int:
        return self.length * self.bottleneck + self.bottleneck * shape_of(model).hidden_size


@dataclass
class ResidualPromptConfig(SoftPromptConfig):
    """Residual PT: one MLP shared by all tokens, bottleneck 400, which gives the paper's 462K / 693K / 925K (the
    authors' code, arazd/ResidualPrompts, defaults to 800; the paper's counts were taken from the DPT paper)."""

    name: ClassVar[str] = "residual"
    title: ClassVar[str] = "Residual prompt tuning (Razdaibiedina et al., 2023)"
    module: ClassVar[str] = "lamp_engine.prompts.residual:ResidualPrompt"

    bottleneck: int = described("hidden width of the reparameterising MLP", 400, most=65_536)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "bottleneck")

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int:
        l, d, h = self.length, shape_of(model).hidden_size, self.bottleneck
        return l * d + (d * h + h) + (h * d + d) + 2 * d


@dataclass
class DecomposedPromptTuningConfig(SoftPromptConfig):
    """DePT as its authors' code sets it (ZhengxiangShi/DePT): a shorter prompt of m = 60 tokens and a low-rank
    update A (s x r) B (r x d) of the text's embeddings, scaled by 8 / sqrt(r), with its own learning rate (1e-4
    in their CB and RTE runs). r defaults to the largest one that keeps the budget m*d + s*r + r*d within PT's at
    the same l (76,800 exactly on T5-base, as their released checkpoints: m = 60, r = 30)."""

    name: ClassVar[str] = "dept"
    title: ClassVar[str] = "DePT, decomposed prompt tuning (Shi and Lipani, 2024)"
    module: ClassVar[str] = "lamp_engine.prompts.dept:DecomposedPromptTuning"
    exports_peft: ClassVar[bool] = False  # its update of the text's own embeddings has no PEFT counterpart

    dept_length: int = described("length m of its shorter prompt (l is the PT budget it matches)", 60,
                                  most=4096)
    rank: int | None = described("rank r of the update A (s x r) B (r x d) of the text's embeddings; empty: "
                                 "the largest r within PT's budget at the same l", None, most=4096)
    pair_lr: float = described("learning rate of the low-rank pair A, B (--lr is the prompt's)", 1e-4)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "dept_length", "pair_lr")
        if self.rank is not None:
            positive(self, "rank")
        require(self.dept_length < self.length or self.rank is not None, "dept_length",
                f"the shorter prompt ({self.dept_length}) leaves no budget for the pair under PT's at length "
                f"{self.length}; use a shorter dept_length or give --rank")
        require(self.dept_length <= self.length, "dept_length",
                f"{self.dept_length} exceeds the prompt length {self.length} it is drawn from")

    def resolved_rank(self, hidden_size: int, max_source_length: int) -> int:
        """r as given, else the largest r with m*d + (s + d)*r <= l*d (at least 1)."""
        budget = (self.length - self.dept_length) * hidden_size
        return self.rank or max(1, budget // (max_source_length + hidden_size))

    @property
    def prompt_tokens(self) -> int:
        return self.dept_length

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int:
        d = shape_of(model).hidden_size
        r = self.resolved_rank(d, max_source_length)
        return self.dept_length * d + max_source_length * r + r * d


# PEFT's own default target modules per architecture (peft/utils/constants.py,
# TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING), the ones `target_modules=auto` names.
LORA_DEFAULT_TARGETS = {"llama": ("q_proj", "v_proj"), "mistral": ("q_proj", "v_proj"),
                        "qwen2": ("q_proj", "v_proj"), "gemma3_text": ("q_proj", "v_proj"), "bert": ("query", "value"),
                        "roberta": ("query", "value"), "mpnet": ("q", "v"),  # PEFT has none for MPNet: BERT's
                        "t5": ("q", "v"), "mt5": ("q", "v"), "bart": ("q_proj", "v_proj"), "gpt2": ("c_attn",)}
ALL_LINEAR = "all-linear"


@dataclass
class LoraConfig(MethodConfig):
    """LoRA (Hu et al., 2022) through PEFT's LoraConfig: an update (alpha / r) B A of chosen linear layers, A
    Kaiming-uniform and B zero; r = 8 and alpha = 16 as PEFT's examples, and PEFT's own default target modules
    per architecture. The variants below are PEFT options of the same tuner."""

    name: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA (Hu et al., 2022), through PEFT"
    family: ClassVar[MethodFamily] = MethodFamily.WEIGHT_ADAPTER
    module: ClassVar[str] = "lamp_engine.adapters.lora:LoraAdapter"
    exports_peft: ClassVar[bool] = True
    # LoRA learns at rates like full fine-tuning's ten-fold, far below a prompt's (PEFT's examples: 1e-4 to 3e-4). On
    # an encoder at our budgets 3e-4 is far from converged: minilm-l6 SST-2, 100 steps, selection 63.4 % at 3e-4
    # against 80.2 % at 1e-3 (docs/benchmarks.md 4.3); the other families keep PEFT's 3e-4 until measured.
    default_lrs: ClassVar[dict[BackboneFamily, float]] = {BackboneFamily.SEQ2SEQ: 3e-4, BackboneFamily.CAUSAL: 3e-4,
                                                          BackboneFamily.ENCODER: 1e-3}
    peft_options: ClassVar[dict[str, Any]] = {}  # what distinguishes a variant, passed to peft.LoraConfig

    rank: int = described("rank r of each update B A", 8, most=4096)
    alpha: float = described("the update is scaled by alpha / r (alpha / sqrt(r) for rsLoRA)", 16.0)
    dropout: float = described("dropout on the adapted layers' input", 0.0)
    target_modules: str = described(f"linear layers to adapt: 'auto' (PEFT's default per architecture: q_proj,v_proj "
                                    f"on Llama, query,value on BERT, q,v on T5), '{ALL_LINEAR}', or names separated "
                                    "by commas", "auto")

    def __post_init__(self) -> None:
        positive(self, "rank")
        bounded(self)
        require(self.alpha > 0, "alpha", f"must be > 0 (alpha 0 makes the update vanish), got {self.alpha}")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        names = [n.strip() for n in self.target_modules.split(",")]
        require(all(names) and all(n.replace("_", "").replace(".", "").replace("-", "").isalnum() for n in names),
                "target_modules", f"give 'auto', '{ALL_LINEAR}' or layer names separated by commas, got "
                                  f"{self.target_modules!r}")

    @property
    def prompt_tokens(self) -> int:
        return 0

    def targets(self, shape: ModelShape) -> tuple[str, ...] | None:
        """The layer names to adapt on this model; None where 'auto' has no default for its architecture."""
        if self.target_modules == "auto":
            return LORA_DEFAULT_TARGETS.get(shape.model_type or "")
        if self.target_modules == ALL_LINEAR:
            return tuple(sorted({linear.name for linear in shape.linears if linear.all_linear}))
        return tuple(n.strip() for n in self.target_modules.split(","))

    def check_model(self, shape: ModelShape) -> None:
        if not shape.linears:
            return  # a hub model before it loads: checked once it has
        targets = self.targets(shape)
        require(targets is not None, "target_modules", f"PEFT has no default target layers for model type "
                                                       f"{shape.model_type!r}; name them, or use '{ALL_LINEAR}'")
        unknown = [name for name in targets if name not in shape.linear_names()]
        layers = ", ".join(sorted(shape.linear_names()))
        require(not unknown, "target_modules", f"{', '.join(map(repr, unknown))} is not a linear layer of this "
                                               f"model; its linear layers are {layers}")

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int | None:
        """PEFT's count: r (in + out) for every adapted layer, plus DoRA's magnitude vector (out) where used."""
        shape = shape_of(model)
        targets = self.targets(shape) if shape.linears else None
        if targets is None:
            return None
        magnitude = 1 if self.peft_options.get("use_dora") else 0
        return sum(linear.count * (self.rank * (linear.in_features + linear.out_features)
                                   + magnitude * linear.out_features)
                   for linear in shape.linears if linear.name in targets and linear.all_linear)


@dataclass
class DoraConfig(LoraConfig):
    """DoRA (Liu et al., 2024): LoRA on the direction plus a trained magnitude per output (PEFT use_dora)."""

    name: ClassVar[str] = "dora"
    title: ClassVar[str] = "DoRA (Liu et al., 2024), through PEFT"
    peft_options: ClassVar[dict[str, Any]] = {"use_dora": True}


@dataclass
class RsLoraConfig(LoraConfig):
    """rsLoRA (Kalajdzievski, 2023): the update scaled by alpha / sqrt(r) (PEFT use_rslora)."""

    name: ClassVar[str] = "rslora"
    title: ClassVar[str] = "rsLoRA (Kalajdzievski, 2023), through PEFT"
    peft_options: ClassVar[dict[str, Any]] = {"use_rslora": True}


@dataclass
class PissaConfig(LoraConfig):
    """PiSSA (Meng et al., 2024): A and B start from the top-r singular vectors of each weight, which keeps its
    residual (PEFT init_lora_weights='pissa'); saved converted to a plain LoRA of the original weights."""

    name: ClassVar[str] = "pissa"
    title: ClassVar[str] = "PiSSA (Meng et al., 2024), through PEFT"
    loads_4bit: ClassVar[bool] = False  # it needs the SVD of full-precision weights
    peft_options: ClassVar[dict[str, Any]] = {"init_lora_weights": "pissa"}


@dataclass
class LoraGaConfig(LoraConfig):
    """LoRA-GA (Wang et al., 2024): A and B start from the SVD of the weights' gradients, estimated on a few
    training batches (PEFT init_lora_weights='lora_ga'); saved converted to a plain LoRA of the original weights."""

    name: ClassVar[str] = "lora_ga"
    title: ClassVar[str] = "LoRA-GA (Wang et al., 2024), through PEFT"
    loads_4bit: ClassVar[bool] = False  # PEFT refuses quantised layers
    peft_options: ClassVar[dict[str, Any]] = {"init_lora_weights": "lora_ga"}

    gradient_batches: int = described("training batches whose gradients initialise A and B", 8,
                                       most=10_000)

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "gradient_batches")


@dataclass
class LoraPlusConfig(LoraConfig):
    """LoRA+ (Hayou et al., 2024): B learns loraplus_lr_ratio times faster than A (PEFT's
    create_loraplus_optimizer builds the groups); the paper recommends a ratio of 16."""

    name: ClassVar[str] = "loraplus"
    title: ClassVar[str] = "LoRA+ (Hayou et al., 2024), through PEFT"

    # B already learns 16x faster: the encoder rate above was measured for plain LoRA only.
    default_lrs: ClassVar[dict[BackboneFamily, float]] = dict.fromkeys(BackboneFamily, 3e-4)

    loraplus_lr_ratio: float = described("B's learning rate over A's", 16.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.loraplus_lr_ratio >= 1, "loraplus_lr_ratio", f"must be >= 1, got {self.loraplus_lr_ratio}")


@dataclass
class FullFineTuningConfig(MethodConfig):
    """Every weight of the model trains: the reference point of the paper's Table 1."""

    name: ClassVar[str] = "full"
    title: ClassVar[str] = "Full fine-tuning"
    family: ClassVar[MethodFamily] = MethodFamily.FULL_FINE_TUNING
    module: ClassVar[str] = "lamp_engine.adapters.full:FullFineTuning"
    exports_peft: ClassVar[bool] = False  # it writes the whole model, as safetensors
    loads_4bit: ClassVar[bool] = False  # 4-bit weights cannot be trained
    default_lrs: ClassVar[dict[BackboneFamily, float]] = dict.fromkeys(BackboneFamily, 3e-5)

    @property
    def prompt_tokens(self) -> int:
        return 0

    def trainable_params(self, model: ModelShape | int, max_source_length: int = 256) -> int | None:
        return shape_of(model).total_params


METHODS: dict[str, type[MethodConfig]] = {kind.name: kind for kind in (
    PromptTuningConfig, LampConfig, DecomposedPromptConfig, ResidualPromptConfig, DecomposedPromptTuningConfig,
    LoraConfig, DoraConfig, PissaConfig, RsLoraConfig, LoraPlusConfig, LoraGaConfig, FullFineTuningConfig)}


def method_config(name: str, **settings: Any) -> MethodConfig:
    """The named method's config from its own settings; a setting of another method is refused by name."""
    if name not in METHODS:
        raise ConfigError(f"method: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    kind = METHODS[name]
    for key in settings:
        if key not in kind.field_names():
            raise ConfigError(not_applicable(key, name))
    try:
        return kind(**settings)
    except TypeError as exc:  # a value of the wrong type reaching a comparison
        raise ConfigError(f"method: {exc}") from None


def method_fields() -> dict[str, list[type[MethodConfig]]]:
    """Every method setting's name and the methods that have it, in registry order."""
    owners: dict[str, list[type[MethodConfig]]] = {}
    for kind in METHODS.values():
        for name in kind.field_names():
            owners.setdefault(name, []).append(kind)
    return owners


def not_applicable(key: str, method: str) -> str:
    if key in RETIRED_SETTINGS:
        return f"{key}: retired ({RETIRED_SETTINGS[key]}); drop it"
    owners = [kind.name for kind in method_fields().get(key, [])]
    if not owners:
        return f"{key}: unknown configuration field"
    return f"{key}: applies to {', '.join(owners)} only, not to {method}; drop it or choose one of those methods"
