"""Fixed-label classification tasks rendered as text-to-text: SST-2, CB and RTE."""

from __future__ import annotations

import random
from collections.abc import Callable

from lamp_engine.config import DataConfig
from lamp_engine.errors import TaskError
from lamp_engine.tasks import metrics
from lamp_engine.tasks.base import Example, Splits, Task
from lamp_engine.tasks.sources import find_file, read_jsonl, read_labelled_lines

HOLDOUT_FRACTION = 0.1
HOLDOUT_MAX = 500


class ClassificationTask(Task):
    """A task whose rows map to one of a fixed set of label words."""

    files: dict[str, str]  # split name -> file under the data folder
    verbalizers: dict  # raw label value -> target word
    render: Callable[[dict], str]
    reader: Callable = staticmethod(read_jsonl)

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(dict.fromkeys(self.verbalizers.values()))

    def examples(self, data: DataConfig, split: str) -> list[Example]:
        path = find_file(data.data_dir, self.files[split], self.name)
        out = []
        for number, row in enumerate(self.reader(path), start=1):
            if row.get("label") not in self.verbalizers:
                raise TaskError(f"{path}, row {number}: label {row.get('label')!r} is not one of "
                                f"{sorted(map(str, self.verbalizers))}")
            out.append(Example(self.render(row), self.verbalizers[row["label"]], self.labels))
        return out

    def load(self, data: DataConfig, seed: int) -> Splits:
        """Train on the training file less a held-out part that selects the best prompt; test on dev."""
        train = self.examples(data, "train")
        random.Random(seed).shuffle(train)
        held = min(HOLDOUT_MAX, max(1, int(len(train) * HOLDOUT_FRACTION)))
        select, train = train[:held], train[held:]
        policy = {
            "train": f"{self.files['train']} less {held} held-out rows (seed {seed})",
            "select": f"{held} rows held out of {self.files['train']}",
            "test": self.files["test"],
        }
        return Splits(train, select, self.examples(data, "test"), policy)

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        golds = [e.target for e in examples]
        out = {"accuracy": metrics.accuracy(predictions, golds)}
        if "macro_f1" in self.metrics:
            out["macro_f1"] = metrics.macro_f1(predictions, golds, self.labels)
        return out


class SST2(ClassificationTask):
    name = "sst2"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    files = {"train": "glue/SST-2/train.txt", "test": "glue/SST-2/dev.txt"}
    verbalizers = {0: "negative", 1: "positive"}
    reader = staticmethod(read_labelled_lines)

    @staticmethod
    def render(row: dict) -> str:
        return f"sentence: {row['sentence']}"


class CB(ClassificationTask):
    name = "cb"
    metrics = ("accuracy", "macro_f1")
    main_metric = "accuracy"
    files = {"train": "superglue/CB/train.jsonl", "test": "superglue/CB/val.jsonl"}
    verbalizers = {"entailment": "entailment", "contradiction": "contradiction", "neutral": "neutral"}

    @staticmethod
    def render(row: dict) -> str:
        return f"premise: {row['premise']} hypothesis: {row['hypothesis']}"


class RTE(ClassificationTask):
    name = "rte"
    metrics = ("accuracy",)
    main_metric = "accuracy"
    files = {"train": "superglue/RTE/train.jsonl", "test": "superglue/RTE/val.jsonl"}
    verbalizers = {"entailment": "yes", "not_entailment": "no"}

    @staticmethod
    def render(row: dict) -> str:
        return f"premise: {row['premise']} hypothesis: {row['hypothesis']}"
