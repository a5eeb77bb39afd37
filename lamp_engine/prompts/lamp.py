"""LAMP (Lan et al., NAACL 2025): prompt decomposition and compressed outer product.

The vocabulary-initialised prompt P (l x d) is factorised once by SVD, P = U S V^T. Only the top-r singular
vectors U (l x r), V (d x r) and values Q (r) are trained (l*r + r + r*d parameters), and the prompt fed to the
model is rebuilt every step:

    M = U diag(Q)                   (eq. 3)   l x r
    I = diag(Q) V^T                 (eq. 4)   r x d
    C = sum_i M[:, i] (x) I[i, :]   (eq. 5)   l x d, one matrix product M @ I
    P' = avg_pool_p(C + R)          (eq. 6)   l/p x d, along the token axis

`q_init="paper"` (Q = S) starts from U S^2 V^T, `"balanced"` (Q = sqrt(S)) from P's rank-r truncation. Appendix
A.1 pools by attention instead: P' = A^T (C + R), A = softmax((C + R) W_sa). R = P - M I at the start is frozen;
P is l/p vocabulary rows each repeated p times (docs/paper-differences.md, "LAMP's start").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lamp_engine.backbones.base import Backbone
from lamp_engine.methods import LampConfig
from lamp_engine.prompts.base import SoftPrompt, repeated_rows, vocabulary_prompt


class Lamp(SoftPrompt):
    def __init__(self, config: LampConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        P = init.float()
        U, S, Vh = torch.linalg.svd(P, full_matrices=False)
        r = config.rank
        Q = S[:r] if config.q_init == "paper" else S[:r].sqrt()
        self.U = nn.Parameter(U[:, :r].contiguous())  # l x r
        self.Q = nn.Parameter(Q.clone())  # r
        self.V = nn.Parameter(Vh[:r].T.contiguous())  # d x r
        self.register_buffer("R", P - self.compressed().detach())  # frozen: the first C + R is P itself
        self.pool = config.pool
        self.W_sa = None
        if config.attention_pool:  # appendix A.1: W_sa (d x l/p)
            self.W_sa = nn.Parameter(0.02 * torch.randn(init.shape[1], init.shape[0] // self.pool))

    @classmethod
    def initial_prompt(cls, config: LampConfig, backbone: Backbone,
                       generator: torch.Generator) -> tuple[torch.Tensor, str]:
        return repeated_rows(*vocabulary_prompt(backbone, config.length // config.pool, generator), config.pool)

    def compressed(self) -> torch.Tensor:
        M = self.U * self.Q  # U diag(Q)        (eq. 3)
        I = self.Q[:, None] * self.V.T  # diag(Q) V^T   (eq. 4)
        return M @ I  # C = sum_i M[:, i] (x) I[i, :] as one matrix product   (eq. 5)

    def unpooled(self) -> torch.Tensor:
        return self.compressed() + self.R

    def forward(self) -> torch.Tensor:
        tokens = self.unpooled()  # C + R, l x d
        if self.W_sa is not None:  # appendix A.1
            A = torch.softmax(tokens @ self.W_sa, dim=0)  # l x l/p, each column a distribution over the l tokens
            return A.T @ tokens
        return F.avg_pool1d(tokens.T.unsqueeze(0), kernel_size=self.pool).squeeze(0).T  # eq. 6

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """A state saved before R existed trained C alone: it loads with R = 0, so it feeds what it fed."""
        super().load_trainable_state({"R": torch.zeros_like(self.R)} | state)
