"""The paper's Figure 6 as the dashboard draws it: the prompt tokens of every selected run projected into one
2-D space (one PCA or one t-SNE fit over all of them), so the spread of the points can be compared on shared axes.

Pure functions of NumPy arrays (read from each run's tokens.safetensors without torch), so tests check them
without a browser.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PROJECTIONS = ("pca", "tsne")
COLUMNS = ["run", "method", "phase", "token", "x", "y"]


def project_jointly(sets: dict[tuple[str, str, str], np.ndarray], projection: str, seed: int = 0) -> pd.DataFrame:
    """One fit over every (run, method, phase) token matrix; a long frame of their 2-D coordinates.

    Every matrix must have the same width (hidden size): tokens of different models live in different spaces.
    """
    if not sets:
        return pd.DataFrame(columns=COLUMNS)
    widths = {matrix.shape[1] for matrix in sets.values()}
    if len(widths) > 1:
        raise ValueError(f"runs of different hidden sizes ({', '.join(map(str, sorted(widths)))}) cannot share one "
                         "space; pick runs of one model")
    rows = np.concatenate([matrix.astype(np.float64) for matrix in sets.values()])
    xy = fit(rows, projection, seed)
    frames, start = [], 0
    for (run, method, phase), matrix in sets.items():
        part = xy[start:start + len(matrix)]
        start += len(matrix)
        frames.append(pd.DataFrame({"run": run, "method": method, "phase": phase, "token": np.arange(len(matrix)),
                                    "x": part[:, 0], "y": part[:, 1]}))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


def fit(rows: np.ndarray, projection: str, seed: int) -> np.ndarray:
    """2-D coordinates of the rows: PCA keeps distances' scale (so spreads compare); t-SNE keeps neighbourhoods.

    On one thread: a few hundred tokens gain nothing from more, and on a busy host the OpenMP threads of t-SNE
    spin-wait for each other (measured: 9-11 s of CPU for 200 tokens on every core against 0.5 s on one).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if len(rows) < 3:
        return np.zeros((len(rows), 2))
    with threadpool_limits(1):
        if projection == "pca":
            return PCA(n_components=2, random_state=seed).fit_transform(rows)
        perplexity = float(min(30.0, (len(rows) - 1) / 3))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(rows)


def spread(points: pd.DataFrame) -> pd.DataFrame:
    """Per run and phase: the mean pairwise distance of its projected points (the picture's own spread)."""
    out = []
    for (run, phase), group in points.groupby(["run", "phase"], sort=False):
        xy = group[["x", "y"]].to_numpy()
        diffs = xy[:, None, :] - xy[None, :, :]
        distances = np.sqrt((diffs ** 2).sum(-1))
        n = len(xy)
        mean = distances.sum() / (n * (n - 1)) if n > 1 else 0.0
        out.append({"run": run, "phase": phase, "mean pairwise distance (picture)": round(float(mean), 4)})
    return pd.DataFrame(out)
