"""The task interface: examples as text-to-text pairs, splits with a recorded policy, and scoring.

Every task renders its rows to `Example`s (a source text, the gold target text and the candidate targets that
rank classification scores), says which file trains, which selects the best prompt and which reports the final
metric, and scores predicted target texts with the paper's metrics (percentages, 0-100).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from lamp_engine.config import DataConfig


@dataclass(frozen=True)
class Example:
    """One text-to-text example. `choices` are the candidate targets that rank classification scores."""

    source: str
    target: str
    choices: tuple[str, ...]
    group: str = ""  # question id: MultiRC and ReCoRD score per question
    answers: tuple[str, ...] = ()  # every gold answer where there are several (ReCoRD); else (target,)
    origin: str = ""  # "file, line N" the example was rendered from, for messages about it

    @property
    def gold(self) -> tuple[str, ...]:
        return self.answers or (self.target,)


@dataclass
class Splits:
    """Train, selection (best-prompt) and test examples, and where each came from."""

    train: list[Example]
    select: list[Example]
    test: list[Example]
    policy: dict[str, str] = field(default_factory=dict)  # split name -> human-readable source
    truncated: int = 0  # examples whose text was cut to the model's maximum


class Task(ABC):
    """A benchmark task. Subclasses set the class attributes and implement `load` and `score`."""

    name: str
    metrics: tuple[str, ...]
    main_metric: str
    labels: tuple[str, ...] | None = None  # fixed verbalizers; None when choices vary per example
    description: str = ""

    @abstractmethod
    def load(self, data: DataConfig, seed: int) -> Splits:
        """Read the task's files (or hub data) and render them to examples."""

    @abstractmethod
    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        """The task's metrics for predicted target texts, as percentages."""


def describe_truncation(examples: list[Example], truncated: list[bool], max_length: int) -> tuple[int, str]:
    """How many sources were cut to `max_length` tokens, and a message naming the first few by file and line.

    The engine tokenises, so it says which were cut; the count goes to `Splits.truncated` and the message to the
    run's log and its split policy.
    """
    long = [e for e, cut in zip(examples, truncated, strict=True) if cut]
    if not long:
        return 0, ""
    shown = "; ".join(e.origin or e.source[:40] for e in long[:3])
    more = f" and {len(long) - 3} more" if len(long) > 3 else ""
    return len(long), (f"{len(long)} of {len(examples)} source texts are longer than {max_length} tokens and were "
                       f"truncated (raise --max-source-length to keep more): {shown}{more}")
