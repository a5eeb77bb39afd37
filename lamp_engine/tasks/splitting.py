"""Seeded, reproducible split operations: hold out a selection set, sample K in all or per class, cap a split.

All of them keep the examples of one group (a MultiRC question, a ReCoRD query) together, so answers of one
question never land on both sides of a split.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

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


def class_shares(sizes: dict[str, int], k: int, rng: random.Random) -> dict[str, int]:
    """How many examples of each class make K in all, balanced as DePT's code balances (K // C of each class): the
    classes are dealt one example at a time in a seeded order, so the K % C left over go to classes the seed picks,
    and a class that runs out leaves its turns to the others (the shares then still sum to K where K exist)."""
    order = sorted(sizes)
    rng.shuffle(order)
    shares = dict.fromkeys(order, 0)
    left = min(k, sum(sizes.values()))
    while left:
        for target in order:
            if left and shares[target] < sizes[target]:
                shares[target] += 1
                left -= 1
    return shares


def take_groups(groups: list[list[Example]], shares: dict[str, int] | None, room: int) -> list[Example]:
    """Whole groups, in the (seeded) order given, up to `room` examples: first those that keep every class within
    its share; then, where whole groups left room short of it (a MultiRC question's answers come in both classes),
    any group that still fits. Without shares (no fixed classes) only the room counts."""
    taken = [False] * len(groups)
    counts: Counter[str] = Counter()
    for within_shares in ((True, False) if shares is not None else (False,)):
        for index, group in enumerate(groups):
            need = Counter(example.target for example in group)
            fits = not taken[index] and len(group) <= room and (
                not within_shares or all(counts[t] + n <= shares.get(t, 0) for t, n in need.items()))
            if fits:
                taken[index] = True
                counts.update(need)
                room -= len(group)
    return _flatten([group for group, chosen in zip(groups, taken, strict=True) if chosen])


def sample_in_total(examples: list[Example], k: int, seed: int, balanced: bool = True) -> list[Example]:
    """K examples in all, seeded, with every group kept whole (a MultiRC question's answers); `balanced` (a task
    with fixed classes): K // C of each class and the rest to classes the seed picks, as DePT's code samples."""
    rng = random.Random(seed)
    groups = _groups(examples)
    rng.shuffle(groups)
    shares = class_shares(Counter(e.target for e in examples), k, rng) if balanced else None
    return take_groups(groups, shares, min(k, len(examples)))


def sample_per_class(examples: list[Example], k: int, seed: int) -> list[Example]:
    """K examples of each target class, seeded, groups kept whole; a class with fewer than K gives all it has."""
    rng = random.Random(seed)
    groups = _groups(examples)
    rng.shuffle(groups)
    shares = {target: min(k, size) for target, size in Counter(e.target for e in examples).items()}
    return take_groups(groups, shares, sum(shares.values()))


def cap(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """At most `limit` examples, a seeded sample (kept in their original order)."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = set(random.Random(seed).sample(range(len(examples)), limit))
    return [example for index, example in enumerate(examples) if index in keep]
