"""LAMP (Lan et al., NAACL 2025): prompt decomposition and compressed outer product.

The vocabulary-initialised prompt P (l x d) is factorised once by SVD, P = U S V^T. Only the top-r singular
vectors U (l x r), V (d x r) and values Q (r) are trained (l*r + r + r*d parameters), and the prompt fed to the
model is rebuilt every step:

    M = U diag(Q)                   (eq. 3)   l x r
    I = diag(Q) V^T                 (eq. 4)   r x d
    C = sum_i M[:, i] (x) I[i, :]   (eq. 5)   l x d, one matrix product M @ I
    P' = avg_pool_p(C)              (eq. 6)   l/p x d, along the token axis

Since M I = U diag(Q)^2 V^T, `q_init="paper"` (Q = S) starts from U S^2 V^T, while `q_init="balanced"`
(Q = sqrt(S)) starts exactly from the rank-r truncation U_r S_r V_r^T of P.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lamp_engine.methods import LampConfig
from lamp_engine.prompts.base import SoftPrompt


class Lamp(SoftPrompt):
    def __init__(self, config: LampConfig, init: torch.Tensor, max_source_length: int) -> None:
        super().__init__(config)
        if config.pool_init == "blocks":  # l/p distinct rows, each repeated p times: pooling gives them back whole
            init = init[: init.shape[0] // config.pool].repeat_interleave(config.pool, dim=0)
        U, S, Vh = torch.linalg.svd(init.float(), full_matrices=False)
        r = config.rank
        Q = S[:r] if config.q_init == "paper" else S[:r].sqrt()
        if config.prompt_scale == "matched":  # C grows as Q^2: give the first C the norm of P itself
            Q = Q * (init.float().norm() / (U[:, :r] * Q**2 @ Vh[:r]).norm()).sqrt()
        self.U = nn.Parameter(U[:, :r].contiguous())  # l x r
        self.Q = nn.Parameter(Q.clone())  # r
        self.V = nn.Parameter(Vh[:r].T.contiguous())  # d x r
        self.register_buffer("R", None)  # `residual="frozen"`: what the first rank-r product leaves out of P
        if config.residual == "frozen":
            self.R = init.float() - self.unpooled().detach()
        # `factor_lr="scaled"`: each factor's initial RMS over P's (the scale Adam's steps are relative to)
        self.factor_scale = {name: rms(p) / max(rms(init), 1e-12) for name, p in (("U", self.U), ("Q", self.Q),
                                                                            ("V", self.V))}
        self.pool = config.pool
        self.W_sa = None
        if config.attention_pool:  # appendix A.1: W_sa (d x l/p)
            self.W_sa = nn.Parameter(0.02 * torch.randn(init.shape[1], init.shape[0] // self.pool))

    def forward(self) -> torch.Tensor:
        C = self.unpooled()  # eqs. 3-5
        if self.W_sa is not None:
            A = torch.softmax(C @ self.W_sa, dim=0)  # l x l/p, each column a distribution over the l tokens
            return A.T @ C
        return F.avg_pool1d(C.T.unsqueeze(0), kernel_size=self.pool).squeeze(0).T  # eq. 6

    def param_groups(self, lr: float) -> list[dict]:
        """With `factor_lr="scaled"`, each factor learns at lr times its initial RMS over P's, so that Adam (which
        moves every entry by about lr) changes each factor, relatively, as much as PT's prompt per step."""
        if self.config.factor_lr == "equal":
            return super().param_groups(lr)
        groups = [{"params": [getattr(self, name)], "lr": lr * scale} for name, scale in self.factor_scale.items()]
        return groups + ([{"params": [self.W_sa], "lr": lr}] if self.W_sa is not None else [])

    def unpooled(self) -> torch.Tensor:
        M = self.U * self.Q  # U diag(Q)        (eq. 3)
        I = self.Q[:, None] * self.V.T  # diag(Q) V^T   (eq. 4)
        C = M @ I  # C = sum_i M[:, i] (x) I[i, :] as one matrix product   (eq. 5)
        return C if self.R is None else C + self.R


def rms(tensor: torch.Tensor) -> float:
    return tensor.detach().float().pow(2).mean().sqrt().item()
