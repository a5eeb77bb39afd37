"""Soft-prompt methods, one module each, behind a registry from method names to classes."""

from __future__ import annotations

import torch

from lamp_engine.config import PromptConfig
from lamp_engine.prompts.base import SoftPrompt, ordinary_token_ids, sample_vocabulary_rows
from lamp_engine.prompts.dept import DecomposedPromptTuning
from lamp_engine.prompts.dpt import DecomposedPrompt
from lamp_engine.prompts.lamp import Lamp
from lamp_engine.prompts.pt import PromptTuning
from lamp_engine.prompts.residual import ResidualPrompt

METHODS: dict[str, type[SoftPrompt]] = {
    "pt": PromptTuning,
    "lamp": Lamp,
    "dpt": DecomposedPrompt,
    "residual": ResidualPrompt,
    "dept": DecomposedPromptTuning,
}


def build_prompt(config: PromptConfig, init: torch.Tensor, max_source_length: int) -> SoftPrompt:
    """The method's module, initialised from `init` (l x d rows of the vocabulary)."""
    config.check_hidden_size(init.shape[1])
    return METHODS[config.method](config, init, max_source_length)


__all__ = ["METHODS", "SoftPrompt", "build_prompt", "ordinary_token_ids", "sample_vocabulary_rows"]
