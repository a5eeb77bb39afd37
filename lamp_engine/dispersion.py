"""How the prompt tokens spread out (the paper's Figures 1 and 6): the token matrices a run keeps, and two
dispersion figures computed in the model's own space.

A run folder keeps the raw matrices (tokens.safetensors: the prompt the model reads before and after training,
and for LAMP the unpooled C too), so the dashboard can project any set of runs together on shared axes
(app/projection.py); dispersion.json holds the figures.
"""

from __future__ import annotations

import torch

from lamp_engine.modules import MethodModule

TOKENS_FILE = "tokens.safetensors"


def dispersion_figures(rows: torch.Tensor) -> dict[str, float]:
    """Mean pairwise Euclidean distance between prompt tokens, and the trace of their covariance."""
    rows = rows.detach().float()
    distance = torch.pdist(rows).mean().item() if rows.shape[0] > 1 else 0.0
    trace = torch.cov(rows.T).trace().item() if rows.shape[0] > 1 else 0.0
    return {"mean_pairwise_distance": distance, "covariance_trace": trace}


def token_matrices(prompt: MethodModule) -> dict[str, torch.Tensor]:
    """The prompt the model reads and, where the method pools, the unpooled tokens: fp32 CPU copies (never a
    view of a parameter the optimiser goes on to update)."""
    with torch.no_grad():
        out = {"prompt": prompt().detach().float().cpu().clone()}
        unpooled = prompt.unpooled()
        if unpooled is not None:
            out["unpooled"] = unpooled.detach().float().cpu().clone()
    return out


def kept_tokens(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tokens.safetensors' content: `before.prompt`, `after.prompt` (and `.unpooled` where there is one)."""
    return {f"{phase}.{name}": matrix.contiguous() for phase, matrices in (("before", before), ("after", after))
            for name, matrix in matrices.items()}


def dispersion(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """dispersion.json: the figures of each kept matrix, before and after training."""
    return {name: {"before": dispersion_figures(before[name]), "after": dispersion_figures(after[name])}
            for name in after}
