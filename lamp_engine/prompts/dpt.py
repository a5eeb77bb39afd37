"""Decomposed prompt tuning (Xiao et al., 2023): the prompt is a low-rank product A B, trained from uniform init.

As DPT's own code (XYaoooo/DPT, modeling_t5.py): A (l x b) and B (b x d), both drawn from U(-0.5, 0.5), the
prompt A @ B without scaling; b = 10 by default (lamp_engine/methods.py).
"""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.methods import DecomposedPromptConfig
from lamp_engine.prompts.base import SoftPrompt


class DecomposedPrompt(SoftPrompt):
    def __init__(self, config: DecomposedPromptConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        l, d = init.shape
        b = config.bottleneck
        self.A = nn.Parameter(torch.rand(l, b) - 0.5)  # l x b, uniform(-0.5, 0.5); seeded by the run
        self.B = nn.Parameter(torch.rand(b, d) - 0.5)  # b x d

    def forward(self) -> torch.Tensor:
        return self.A @ self.B
