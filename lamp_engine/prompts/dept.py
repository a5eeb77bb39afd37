"""DePT (Shi & Lipani, 2024): a shorter prompt plus a low-rank update A B of the input embeddings."""

from __future__ import annotations

import torch
from torch import nn

from lamp_engine.config import PromptConfig
from lamp_engine.prompts.base import SoftPrompt


class DecomposedPromptTuning(SoftPrompt):
    def __init__(self, config: PromptConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        d = init.shape[1]
        self.P = nn.Parameter(init[: config.dept_length].float().clone())  # m x d
        self.A = nn.Parameter(torch.empty(max_source_length, config.rank))  # s x r
        nn.init.kaiming_uniform_(self.A, a=5**0.5)
        self.B = nn.Parameter(torch.zeros(config.rank, d))  # r x d: the update starts at zero, as in LoRA

    def forward(self) -> torch.Tensor:
        return self.P

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Adds (A B)[t] to the embedding of the t-th text token, for the first s positions."""
        positions = min(embeds.shape[1], self.A.shape[0])
        update = (self.A[:positions] @ self.B).to(embeds.dtype)
        return torch.cat([embeds[:, :positions] + update, embeds[:, positions:]], dim=1)
