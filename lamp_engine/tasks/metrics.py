"""The paper's metrics, as percentages (0-100), on predicted and gold target texts."""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Sequence


def accuracy(predictions: Sequence[str], golds: Sequence[str]) -> float:
    if not golds:
        return 0.0
    return 100.0 * sum(p == g for p, g in zip(predictions, golds, strict=True)) / len(golds)


def _f1_of(label: str, predictions: Sequence[str], golds: Sequence[str]) -> float:
    pairs = list(zip(predictions, golds, strict=True))
    tp = sum(p == label and g == label for p, g in pairs)
    fp = sum(p == label and g != label for p, g in pairs)
    fn = sum(p != label and g == label for p, g in pairs)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def binary_f1(predictions: Sequence[str], golds: Sequence[str], positive: str) -> float:
    """F1 of the positive class (MultiRC's F1a over all answer options; MRPC's F1)."""
    return 100.0 * _f1_of(positive, predictions, golds)


def macro_f1(predictions: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over the task's label set (CB's second metric)."""
    return 100.0 * sum(_f1_of(label, predictions, golds) for label in labels) / len(labels)


def grouped_exact_match(predictions: Sequence[str], golds: Sequence[str], groups: Sequence[str]) -> float:
    """Share of groups (MultiRC questions) whose every member is predicted correctly."""
    all_right: dict[str, bool] = defaultdict(lambda: True)
    for prediction, gold, group in zip(predictions, golds, groups, strict=True):
        all_right[group] &= prediction == gold
    return 100.0 * sum(all_right.values()) / len(all_right) if all_right else 0.0


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse white space."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 between normalised strings (0-1)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_scores(predictions: Sequence[str], gold_answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """ReCoRD's token F1 and exact match, each the maximum over a question's gold answers, averaged."""
    if not gold_answers:
        return {"f1": 0.0, "em": 0.0}
    pairs = list(zip(predictions, gold_answers, strict=True))
    f1 = sum(max(token_f1(p, g) for g in golds) for p, golds in pairs)
    em = sum(max(exact_match(p, g) for g in golds) for p, golds in pairs)
    return {"f1": 100.0 * f1 / len(pairs), "em": 100.0 * em / len(pairs)}
