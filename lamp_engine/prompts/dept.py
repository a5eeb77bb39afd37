"""DePT (Shi & Lipani, 2024): a shorter prompt plus a low-rank update of the text's own input embeddings.

As DePT's own code (ZhengxiangShi/DePT, peft/tuners/prompt_tuning_lora.py and peft_model.py): A (s x r) is
Kaiming-uniform (a = sqrt(5)), B (r x d) starts at zero, so the update starts at zero; the update is scaled by
alpha / sqrt(r) with alpha = 8 (their code never changes it) and added position by position to the first s text
embeddings; the shorter prompt is prepended after, so it gets no update. The pair trains with its own learning
rate (`pair_lr`), much smaller than the prompt's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lamp_engine.methods import DecomposedPromptTuningConfig
from lamp_engine.prompts.base import SoftPrompt

ALPHA = 8.0


class DecomposedPromptTuning(SoftPrompt):
    def __init__(self, config: DecomposedPromptTuningConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        d = init.shape[1]
        r = config.resolved_rank(d, max_source_length)
        self.P = nn.Parameter(init[: config.dept_length].float().clone())  # m x d
        self.A = nn.Parameter(torch.empty(max_source_length, r))  # s x r
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(r, d))  # r x d
        self.scaling = ALPHA / math.sqrt(r)

    def forward(self) -> torch.Tensor:
        return self.P

    def adjust_input_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Adds scaling * (A B)[t] to the embedding of the t-th text token, for the first s positions."""
        positions = min(embeds.shape[1], self.A.shape[0])
        update = (self.scaling * (self.A[:positions] @ self.B)).to(embeds.dtype)
        return torch.cat([embeds[:, :positions] + update, embeds[:, positions:]], dim=1)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.P], "lr": lr}, {"params": [self.A, self.B], "lr": self.config.pair_lr}]
