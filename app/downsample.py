"""Curves thinned to what a chart can show: Largest-Triangle-Three-Buckets (Steinarsson, 2013).

A chart a few hundred pixels wide shows no more than a few hundred points per line, but a long run records tens
of thousands; sending them all makes the browser slow to draw every view with curves. LTTB keeps the points that
shape the line (in each bucket, the one forming the largest triangle with the point kept before it and the mean
of the next bucket), so spikes and turns stay where they are. The first and last points are always kept, and so
are the lowest and the highest value, so a curve's best loss or best evaluation is never thinned away.
"""

from __future__ import annotations

import numpy as np

CURVE_POINTS = 400  # points per line a chart gets unless the full data is asked for


def lttb(x: np.ndarray, y: np.ndarray, limit: int = CURVE_POINTS) -> np.ndarray:
    """Sorted indices of the points to keep: all of them when there are at most `limit`, else `limit` chosen by
    LTTB plus the lowest and highest value (so at most limit + 2). `x` is increasing."""
    count = len(x)
    if limit < 3:
        raise ValueError(f"lttb: limit must be at least 3 (got {limit})")
    if count <= limit:
        return np.arange(count)
    edges = np.linspace(1, count - 1, limit - 1).astype(int)  # limit - 2 buckets between the two ends
    kept = [0]
    for bucket in range(limit - 2):
        start, end = edges[bucket], edges[bucket + 1]
        if bucket + 2 < len(edges):
            after_x, after_y = x[end:edges[bucket + 2]].mean(), y[end:edges[bucket + 2]].mean()
        else:
            after_x, after_y = x[-1], y[-1]
        last = kept[-1]
        area = np.abs((x[last] - after_x) * (y[start:end] - y[last]) - (x[last] - x[start:end]) * (after_y - y[last]))
        kept.append(start + int(np.argmax(area)))
    kept.append(count - 1)
    return np.unique(np.array([*kept, int(np.argmin(y)), int(np.argmax(y))]))


def thin_series(series: list[tuple[int, int, float]], limit: int | None = CURVE_POINTS
                ) -> list[tuple[int, int, float]]:
    """(run id, step, value) rows ordered by run and step, each run's line thinned by `lttb` (None: all points)."""
    if limit is None or not series:
        return series
    runs = np.array([row[0] for row in series])
    starts = np.flatnonzero(np.r_[True, runs[1:] != runs[:-1]])
    steps = np.array([row[1] for row in series], dtype=float)
    values = np.array([row[2] for row in series], dtype=float)
    kept = []
    for start, end in zip(starts, [*starts[1:], len(series)], strict=True):
        kept.extend(start + lttb(steps[start:end], values[start:end], limit))
    return [series[i] for i in kept]
