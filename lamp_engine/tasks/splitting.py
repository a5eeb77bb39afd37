"""Seeded, reproducible split operations: hold out a selection set, sample K in all or per class, cap a split.

All of them keep the examples of one group (a MultiRC question, a ReCoRD query) together, so answers of one
question never land on both sides of a split.
"""

from __future__ import annotations

import random
from collections import defaultdict

from lamp_engine.tasks.base import Example

HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 500


def _groups(examples: list[Example]) -> list[list[Example]]:
    """Examples bundled by `group` (each ungrouped example alone), in first-seen order."""
    bundles: dict[str, list[Example]] = defaultdict(list)
    for index, example in enumerate(examples):
        bundles[example.group or f"#{index}"].append(example)
    return list(bundles.values())


def _flatten(groups: list[list[Example]]) -> list[Example]:
    return [example for group in groups for example in group]


def holdout_size(groups: int) -> int:
    return min(HOLDOUT_MAX, max(1, int(groups * HOLDOUT_FRACTION)))


def hold_out(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """(kept, held): a seeded 10% of the groups (at most 500, at least 1) held out, the rest shuffled."""
    groups = _groups(examples)
    random.Random(seed).shuffle(groups)
    held = holdout_size(len(groups))
    return _flatten(groups[held:]), _flatten(groups[:held])


def sample_in_total(examples: list[Example], k: int, seed: int) -> list[Example]:
    """K examples in all, drawn at random (seeded) with every group kept whole (a MultiRC question's answers).

    Groups are taken in a seeded random order while they fit; later, smaller groups fill what is left, so the
    total is K whenever the group sizes allow it (and everything when there are fewer than K).
    """
    groups = _groups(examples)
    random.Random(seed).shuffle(groups)
    chosen: list[list[Example]] = []
    room = k
    for group in groups:
        if len(group) <= room:
            chosen.append(group)
            room -= len(group)
        if room == 0:
            break
    return _flatten(chosen)


def sample_per_class(examples: list[Example], k: int, seed: int) -> list[Example]:
    """K examples of each target class, seeded; a class with fewer than K contributes all of them."""
    rng = random.Random(seed)
    by_target: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_target[example.target].append(example)
    chosen = []
    for target in sorted(by_target):
        pool = by_target[target]
        chosen += rng.sample(pool, min(k, len(pool)))
    rng.shuffle(chosen)
    return chosen


def cap(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, a seeded sample (kept in their original order)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [example for index, example in enumerate(examples) if index in keep]
