"""Soft-prompt methods, one module each; the method registry (lamp_engine/methods.py) names each one's class."""

from __future__ import annotations

import torch

from lamp_engine.methods import MethodConfig
from lamp_engine.modules import method_class
from lamp_engine.prompts.base import SoftPrompt, ordinary_token_ids, sample_vocabulary_rows, vocabulary_prompt


def build_prompt(config: MethodConfig, init: torch.Tensor, max_source_length: int) -> SoftPrompt:
    """A soft-prompt method's module, initialised from `init` (l x d rows of the vocabulary)."""
    return method_class(config)(config, init, max_source_length)


__all__ = ["SoftPrompt", "build_prompt", "ordinary_token_ids", "sample_vocabulary_rows", "vocabulary_prompt"]
