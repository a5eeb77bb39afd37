"""The paper's metrics, as percentages (0-100), on predicted and gold target texts."""

from __future__ import annotations


def accuracy(predictions: list[str], golds: list[str]) -> float:
    if not golds:
        return 0.0
    return 100.0 * sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds)


def macro_f1(predictions: list[str], golds: list[str], labels: tuple[str, ...]) -> float:
    """Unweighted mean of per-class F1 over the task's label set (CB's second metric)."""
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predictions, golds, strict=True))
        fp = sum(p == label and g != label for p, g in zip(predictions, golds, strict=True))
        fn = sum(p != label and g == label for p, g in zip(predictions, golds, strict=True))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return 100.0 * sum(scores) / len(scores)
