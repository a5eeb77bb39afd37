"""LAMP's research variants: the levers tried against its slow start on the small causal LM, for `lamp bench curve`.

They are not options of the engine's LAMP (lamp_engine/prompts/lamp.py stays the paper's equations), nor entries
of its method registry (the form, the command line and the worker never offer them): `lamp_ablation` is the paper's
LAMP plus the levers below, each off by default, and `lamp bench curve` builds it for a LAMP variant given any of
them, by the spelling the research log uses: `lamp_p4[factor_lr=scaled]`, `lamp_p4[prompt_scale=matched]`.
docs/benchmarks.md reports what each one did. Two won on the small causal LM's multi-class tasks (6.4) and became
LAMP's start: the block start and the frozen remainder. Those levers now default to the engine's start and give the
paper's back: `lamp_p4[pool_init=rows,residual=dropped]` is the paper's LAMP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from lamp_engine.backbones.base import Backbone
from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError
from lamp_engine.methods import LampConfig
from lamp_engine.prompts.base import repeated_rows, sample_vocabulary_rows, vocabulary_prompt
from lamp_engine.prompts.lamp import Lamp
from lamp_engine.validation import described, one_of

FACTOR_LRS = ("equal", "scaled")
PROMPT_SCALES = ("truncated", "matched")
POOL_INITS = ("blocks", "rows")
RESIDUALS = ("frozen", "dropped")
INIT_VOCABULARIES = ("frequent", "words")


@dataclass
class LampAblationConfig(LampConfig):
    name: ClassVar[str] = "lamp_ablation"
    title: ClassVar[str] = "LAMP with a research lever (bench/ablations.py)"
    module: ClassVar[str] = "bench.ablations:LampAblation"

    factor_lr: str = described("'equal': U, Q and V learn at --lr; 'scaled': each at --lr times its initial RMS over "
                               "the vocabulary prompt's, so each moves relatively as PT's prompt does", "equal",
                               choices=FACTOR_LRS)
    prompt_scale: str = described("'truncated': the first C is P's rank-r part; 'matched': Q rescaled so that the "
                                  "first C has P's norm", "truncated", choices=PROMPT_SCALES)
    pool_init: str = described("'blocks': l/p distinct vocabulary rows, each repeated p times (the engine's); "
                               "'rows': P is l distinct rows (the paper)", "blocks", choices=POOL_INITS)
    residual: str = described("'frozen': P's part beyond rank r stays as a fixed buffer R, so the first prompt is "
                              "P itself (the engine's); 'dropped': R = 0, the prompt is the rank-r product alone "
                              "(the paper)", "frozen", choices=RESIDUALS)
    init_vocabulary: str = described("'frequent': the first 5,000 ordinary ids (the engine's rule); 'words': the "
                                     "first 5,000 whole alphabetic words of any vocabulary", "frequent",
                                     choices=INIT_VOCABULARIES)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, choices in (("factor_lr", FACTOR_LRS), ("prompt_scale", PROMPT_SCALES), ("pool_init", POOL_INITS),
                              ("residual", RESIDUALS), ("init_vocabulary", INIT_VOCABULARIES)):
            one_of(self, name, choices)


LEVERS = frozenset(f.name for f in fields(LampAblationConfig)) - set(LampConfig.field_names())


def with_levers(config: RunConfig, levers: dict[str, Any]) -> RunConfig:
    """The run with its LAMP replaced by `lamp_ablation` with these levers (a LAMP run is the only kind they fit)."""
    if not levers:
        return config
    if not isinstance(config.method, LampConfig):
        raise ConfigError(f"variants: {', '.join(levers)} apply to LAMP variants only, not to {config.method.name}")
    return dataclasses.replace(config, method=LampAblationConfig(**config.method.settings(), **levers))


class LampAblation(Lamp):
    """The engine's LAMP with the levers of LampAblationConfig applied around its equations."""

    def __init__(self, config: LampAblationConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config, init, max_source_length)
        P = init.float()
        with torch.no_grad():
            if config.prompt_scale == "matched":  # C grows as Q^2: give the first C the norm of P itself
                self.Q.mul_((P.norm() / self.compressed().norm()).sqrt())
                self.R.copy_(P - self.compressed())
            if config.residual == "dropped":
                self.R.zero_()
        self.factor_scale = {name: rms(getattr(self, name)) / max(rms(P), 1e-12) for name in ("U", "Q", "V")}

    @classmethod
    def initial_prompt(cls, config: LampAblationConfig, backbone: Backbone,
                       generator: torch.Generator) -> tuple[torch.Tensor, str]:
        distinct = config.length // config.pool if config.pool_init == "blocks" else config.length
        if config.init_vocabulary == "frequent":
            rows, rule = vocabulary_prompt(backbone, distinct, generator)
        else:
            ids = whole_words(backbone.tokenizer)
            rows = sample_vocabulary_rows(backbone.model.get_input_embeddings(), ids, distinct, generator)
            rule = f"the first {len(ids):,} whole alphabetic words of 2+ ASCII letters"
        return repeated_rows(rows, rule, config.length // distinct)

    def param_groups(self, lr: float) -> list[dict]:
        """With `factor_lr="scaled"`, each factor learns at lr times its initial RMS over P's, so that Adam (which
        moves every entry by about lr) changes each factor, relatively, as much as PT's prompt per step."""
        if self.config.factor_lr == "equal":
            return super().param_groups(lr)
        groups = [{"params": [getattr(self, name)], "lr": lr * scale} for name, scale in self.factor_scale.items()]
        return groups + ([{"params": [self.W_sa], "lr": lr}] if self.W_sa is not None else [])


def whole_words(tokenizer, limit: int = 5000) -> list[int]:
    """The first `limit` ids that are whole words of two or more ASCII letters, BPE's and SentencePiece's word-start
    markers (Ġ, ▁) aside (a BPE vocabulary's first ids are single bytes and word pieces)."""
    special = set(tokenizer.all_special_ids)
    ids = []
    for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        word = (token or "").lstrip("Ġ▁")
        if token_id not in special and len(word) >= 2 and word.isascii() and word.isalpha():
            ids.append(token_id)
            if len(ids) == limit:
                break
    return ids


def rms(tensor: torch.Tensor) -> float:
    return tensor.detach().float().pow(2).mean().sqrt().item()
