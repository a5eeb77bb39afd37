"""Decomposed prompt tuning (Xiao et al., 2023): the prompt is a low-rank product A B, trained from uniform init."""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.config import PromptConfig
from lamp_engine.prompts.base import SoftPrompt


class DecomposedPrompt(SoftPrompt):
    def __init__(self, config: PromptConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        l, d = init.shape
        self.A = nn.Parameter(torch.rand(l, config.rank) - 0.5)  # l x b, uniform(-0.5, 0.5); seeded by the run
        self.B = nn.Parameter(torch.rand(config.rank, d) - 0.5)  # b x d

    def forward(self) -> torch.Tensor:
        return self.A @ self.B
