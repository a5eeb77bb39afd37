"""Prompt tuning (Lester et al., 2021): the prompt matrix itself is the trainable parameter."""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.methods import PromptTuningConfig
from lamp_engine.prompts.base import SoftPrompt


class PromptTuning(SoftPrompt):
    def __init__(self, config: PromptTuningConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        self.P = nn.Parameter(init.float().clone())  # l x d

    def forward(self) -> torch.Tensor:
        return self.P
