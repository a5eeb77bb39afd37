"""Residual prompt tuning (Razdaibiedina et al., 2023): P reparameterised through a residual MLP."""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.methods import ResidualPromptConfig
from lamp_engine.prompts.base import SoftPrompt


class ResidualPrompt(SoftPrompt):
    def __init__(self, config: ResidualPromptConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        d = init.shape[1]
        self.P = nn.Parameter(init.float().clone())
        self.mlp = nn.Sequential(
            nn.Linear(d, config.bottleneck), nn.ReLU(), nn.Linear(config.bottleneck, d), nn.LayerNorm(d)
        )

    def forward(self) -> torch.Tensor:
        return self.P + self.mlp(self.P)
