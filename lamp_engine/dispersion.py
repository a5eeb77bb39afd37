"""How the prompt tokens spread out (the paper's Figures 1 and 6): 2-D projections and two dispersion figures.

Before and after are projected together, so their coordinates share one space and can be drawn on one chart.
"""

from __future__ import annotations

import numpy as np
import torch


def dispersion_figures(prompt: torch.Tensor) -> dict[str, float]:
    """Mean pairwise Euclidean distance between prompt tokens, and the trace of their covariance."""
    rows = prompt.detach().float()
    distance = torch.pdist(rows).mean().item() if rows.shape[0] > 1 else 0.0
    trace = torch.cov(rows.T).trace().item() if rows.shape[0] > 1 else 0.0
    return {"mean_pairwise_distance": distance, "covariance_trace": trace}


def project(before: torch.Tensor, after: torch.Tensor, seed: int = 0) -> dict[str, dict[str, list]]:
    """PCA and t-SNE coordinates of the prompt tokens before and after training."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rows = torch.cat([before, after]).detach().float().numpy()
    n = before.shape[0]
    out = {"pca": PCA(n_components=2, random_state=seed).fit_transform(rows)}
    if rows.shape[0] > 3:
        perplexity = float(min(30, rows.shape[0] - 1) / 1.5)
        out["tsne"] = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(rows)
    else:
        out["tsne"] = np.zeros((rows.shape[0], 2))
    return {name: {"before": xy[:n].round(5).tolist(), "after": xy[n:].round(5).tolist()} for name, xy in out.items()}


def dispersion(before: torch.Tensor, after: torch.Tensor, seed: int = 0) -> dict:
    """Everything the dashboard's dispersion view draws, as plain JSON-ready values."""
    return {**project(before, after, seed),
            "figure": {"before": dispersion_figures(before), "after": dispersion_figures(after)}}
