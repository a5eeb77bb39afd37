"""Is a run learning? One line for a run whose training went nowhere, with what to try.

A LAMP run on a small causal LM can stay at chance on a multi-class task where PT learns (docs/benchmarks.md), and
an adapter at too small a rate barely moves; neither fails, so without a note the result reads as the method's
accuracy. A run is flagged when its training loss over the second half of its steps is not below its loss over
the first few, or when its best selection accuracy is within a point of always answering the most common label.
Torch-free: the worker, the dashboard and `lamp status` read the note as stored.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence

from lamp_engine.aliases import BackboneFamily

START_STEPS = 5  # the starting loss: the mean over the first steps (one batch alone is noisy)
JUDGED_SHARE = 0.5  # the loss is judged over the steps after this share of the run
MIN_STEPS = 10  # shorter runs are not judged on their loss
MAJORITY_MARGIN = 1.0  # accuracy points above the majority-class rate that still count as "at" it


def majority_rate(labels: Sequence[object]) -> float | None:
    """The accuracy (in %) of always answering the most common label; None without labels."""
    return 100.0 * Counter(labels).most_common(1)[0][1] / len(labels) if labels else None


def learning_note(losses: Sequence[float], accuracy: float | None, majority: float | None, method: str,
                  family: str) -> str | None:
    """"not learning: <why>; <what to try>" for a run that did not learn, else None.

    `accuracy` is the best selection accuracy in % (None where the task's metric is not accuracy), `majority` the
    selection split's majority-class rate in %.
    """
    reasons = []
    if len(losses) >= MIN_STEPS:
        start = statistics.fmean(losses[:START_STEPS])
        later = statistics.fmean(losses[int(len(losses) * JUDGED_SHARE):])
        if later >= start:
            reasons.append(f"training loss did not fall ({start:.2f} over the first {START_STEPS} steps, {later:.2f} "
                           "over the second half)")
    if accuracy is not None and majority is not None and accuracy <= majority + MAJORITY_MARGIN:
        reasons.append(f"best selection accuracy {accuracy:.1f} % is not above the majority-class rate "
                       f"({majority:.1f} %)")
    if not reasons:
        return None
    return f"not learning: {'; '.join(reasons)}; {what_to_try(method, family)}"


def what_to_try(method: str, family: str) -> str:
    if method == "lamp" and family == BackboneFamily.CAUSAL:
        return "LAMP on a small causal LM: try PT, or a higher rank (--rank 16) and --lr 0.005"
    return "try another learning rate (--lr) or more steps (--steps)"
