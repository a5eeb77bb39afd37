"""The user's own task: a CSV or JSONL file with a text column (or two) and a label column.

Labels of any type (strings, integers, booleans) map to words: by `--verbalizers 0=negative,1=positive` when
given, else each label's own text (booleans as true/false). Without `--eval-file`, part of the training file is
held out for the test and part for selecting the best prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lamp_engine.config import CUSTOM_TASK, DataConfig
from lamp_engine.errors import TaskError
from lamp_engine.tasks import metrics
from lamp_engine.tasks.base import Example, Splits
from lamp_engine.tasks.benchmark import Plan, RowTask, SplitSource, build_splits
from lamp_engine.tasks.sources import Row, read_table


def label_key(raw: Any) -> str:
    """A label value as text: booleans as true/false, integral floats (CSV columns with gaps) as integers."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw).strip()


def parse_verbalizers(text: str | None) -> dict[str, str]:
    """`0=negative,1=positive` as {label text (lower case): word}; empty when not given."""
    if not text or not text.strip():
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, word = item.partition("=")
        if not sep or not key.strip() or not word.strip():
            raise TaskError(f"verbalizers: expected label=word pairs separated by commas (e.g. "
                            f"0=negative,1=positive), got {item.strip()!r}")
        out[key.strip().lower()] = word.strip()
    if len(set(out.values())) < len(out):
        raise TaskError(f"verbalizers: two labels map to the same word in {text!r}; give each label its own word")
    return out


def _sort_key(key: str) -> tuple:
    try:
        return (0, float(key), key)
    except ValueError:
        return (1, 0.0, key)


class CustomTask(RowTask):
    name = CUSTOM_TASK
    description = "your own CSV or JSONL file: --train-file, --text-column [--text-pair-column], --label-column"
    metrics = ("accuracy", "macro_f1")
    main_metric = "accuracy"

    def __init__(self) -> None:
        self.labels: tuple[str, ...] | None = None  # known once the training file is read
        self.data = DataConfig()
        self.verbalizer: dict[str, str] = {}  # label text (lower case) -> word
        self.verbalizer_origin = ""

    def load(self, data: DataConfig, seed: int) -> Splits:
        self.data = data
        train_path = self._existing(data.train_file, "train_file")
        columns = [c for c in (data.text_column, data.text_pair_column, data.label_column) if c]
        train_rows = read_table(train_path, columns)
        test = None
        if data.eval_file:  # read only when the reported set is (a selection-only run never reads it)
            eval_path = self._existing(data.eval_file, "eval_file")
            test = SplitSource(data.eval_file, lambda: read_table(eval_path, columns))
        self._set_verbalizer(data, train_rows, train_path)
        splits = build_splits(self, Plan(f"user files ({train_path.suffix[1:]})",
                                         SplitSource(data.train_file, lambda: train_rows), test), data, seed)
        splits.policy["verbalizers"] = ", ".join(f"{k}={w}" for k, w in self.verbalizer.items())
        return splits

    @staticmethod
    def _existing(path: str | None, field_name: str) -> Path:
        if not path:
            raise TaskError(f"task custom: no {field_name}; pass --train-file with a CSV or JSONL file "
                            "(and --text-column, --label-column naming its columns)")
        if not Path(path).is_file():
            raise TaskError(f"{field_name}: file {path} not found")
        return Path(path)

    def _set_verbalizer(self, data: DataConfig, rows: list[Row], path: Path) -> None:
        given = parse_verbalizers(data.verbalizers)
        if given:
            self.verbalizer, self.verbalizer_origin = given, "--verbalizers"
        else:
            keys = {label_key(row.get(data.label_column)) for row in rows}
            self.verbalizer = {k.lower(): k for k in sorted(keys, key=_sort_key)}
            self.verbalizer_origin = f"the labels found in {path}"
        self.labels = tuple(self.verbalizer.values())
        if len(self.labels) < 2:
            raise TaskError(f"{path}: column {data.label_column!r} holds one label only ({self.labels[0]!r}); "
                            "a classifier needs at least two")

    def render(self, row: Row) -> list[Example]:
        data = self.data
        source = f"{data.text_column}: {str(row.get(data.text_column)).strip()}"
        if data.text_pair_column:
            source += f" {data.text_pair_column}: {str(row.get(data.text_pair_column)).strip()}"
        raw = row.get(data.label_column)
        word = self.verbalizer.get(label_key(raw).lower())
        if word is None:
            raise TaskError(f"{row.origin}: label {raw!r} is not one of {', '.join(self.verbalizer)} "
                            f"(from {self.verbalizer_origin}); fix the row or extend --verbalizers")
        return [Example(source, word, self.labels or (), origin=row.origin)]

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        golds = [example.target for example in examples]
        return {"accuracy": metrics.accuracy(predictions, golds),
                "macro_f1": metrics.macro_f1(predictions, golds, self.labels or tuple(sorted(set(golds))))}

