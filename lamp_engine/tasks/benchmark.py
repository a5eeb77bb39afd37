"""Where a task's examples come from, and how they are split: the machinery every task shares.

A `Plan` names the source (local folder, hub, user files) and which file feeds which split; `build_splits`
reads it, renders rows to examples, applies the split policy (hold-out, few-shot, caps) and records that policy
in words in `Splits.policy`, so every run states which file trained, which selected and which reported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lamp_engine.config import DataConfig
from lamp_engine.errors import TaskError
from lamp_engine.tasks import metrics
from lamp_engine.tasks.base import Example, Splits, Task
from lamp_engine.tasks.sources import HubUnavailable, Row, read_hub, read_jsonl
from lamp_engine.tasks.splitting import cap, hold_out, sample_in_total, sample_per_class


@dataclass(frozen=True)
class SplitSource:
    """One split's rows: how the policy names it and how to read it."""

    name: str
    read: Callable[[], list[Row]]


@dataclass(frozen=True)
class Plan:
    """Which source feeds which split. A missing `select` (or `test`) is held out of the training rows."""

    source: str
    train: SplitSource
    test: SplitSource | None = None
    select: SplitSource | None = None


@dataclass(frozen=True)
class LocalLayout:
    """A task's files under the data folder, by role: train (full), test, train32 and dev32 (FewGLUE)."""

    folder: str
    files: dict[str, str]
    reader: Callable[[Path], list[Row]] = read_jsonl
    rename: dict[str, str] = field(default_factory=dict)  # file column -> the field name the template uses


@dataclass(frozen=True)
class HubLayout:
    repo: str
    config: str
    train: str = "train"
    test: str = "validation"

    @property
    def name(self) -> str:
        return f"{self.repo}:{self.config}"


def superglue_layout(folder: str) -> LocalLayout:
    """SuperGLUE's JSONL files plus FewGLUE's 32-example splits, as found in ../shared/data."""
    return LocalLayout(f"superglue/{folder}", {"train": "train.jsonl", "test": "val.jsonl",
                                               "train32": "train32.jsonl", "dev32": "dev32.jsonl"})


class RowTask(Task):
    """A task that renders raw rows to examples; `build_splits` turns its plan into splits."""

    def render(self, row: Row) -> list[Example]:
        """The examples of one row in evaluation form (one per question, all gold answers kept)."""
        raise NotImplementedError

    def training_examples(self, example: Example) -> list[Example]:
        """The training form of an example; ReCoRD trains on one example per gold answer."""
        return [example]

    def render_rows(self, rows: list[Row]) -> list[Example]:
        return [example for row in rows for example in self.render(row)]


class BenchmarkTask(RowTask):
    """A task read from a local folder in its original format, else from the hub."""

    local: LocalLayout
    hub: HubLayout

    def local_files(self, data_dir: str | Path | None) -> dict[str, Path]:
        """The task's files present under the data folder, by role."""
        if not data_dir:
            return {}
        folder = Path(data_dir) / self.local.folder
        return {role: folder / name for role, name in self.local.files.items() if (folder / name).is_file()}

    def plan(self, data: DataConfig) -> Plan:
        return self.local_plan(data.data_dir) or self.hub_plan(data.data_dir)

    def local_plan(self, data_dir: str | None) -> Plan | None:
        """Full train + test when present; else FewGLUE train32 (+ dev32 to select) + test; else train32/dev32."""
        found = self.local_files(data_dir)
        if not data_dir or not found:
            return None

        def split(role: str) -> SplitSource:
            return SplitSource(f"{self.local.folder}/{self.local.files[role]}", lambda: self._read_local(found[role]))

        source = f"local folder {Path(data_dir).resolve()}"
        if {"train", "test"} <= found.keys():
            return Plan(source, split("train"), split("test"))
        if {"train32", "test"} <= found.keys():
            return Plan(source, split("train32"), split("test"), split("dev32") if "dev32" in found else None)
        if {"train32", "dev32"} <= found.keys():
            return Plan(source, split("train32"), split("dev32"))
        return None

    def _read_local(self, path: Path) -> list[Row]:
        rows = self.local.reader(path)
        if not self.local.rename:
            return rows
        return [Row({self.local.rename.get(k, k): v for k, v in row.fields.items()}, row.origin) for row in rows]

    def hub_plan(self, data_dir: str | None) -> Plan:
        """Train on the hub's train split less a held-out part; report on its validation split."""
        hub = self.hub

        def split(name: str) -> SplitSource:
            return SplitSource(f"{hub.name}/{name}", lambda: self._read_hub(name, data_dir))

        return Plan(f"hub {hub.name}", split(hub.train), split(hub.test))

    def _read_hub(self, split: str, data_dir: str | None) -> list[Row]:
        try:
            return [self._hub_row(row) for row in read_hub(self.hub.repo, self.hub.config, split)]
        except HubUnavailable as exc:
            raise TaskError(self._no_source_message(data_dir, str(exc))) from None

    def _hub_row(self, row: Row) -> Row:
        """Hub rows in the field names of the local files (most tasks already match)."""
        return row

    def _no_source_message(self, data_dir: str | None, hub_reason: str) -> str:
        wanted = ", ".join(self.local.files.values())
        local = (f"no usable files in {Path(data_dir) / self.local.folder} (looked for {wanted})" if data_dir
                 else "no --data-dir given")
        return (f"task {self.name}: no data source available. Local: {local}. Hub {self.hub.name}: {hub_reason}. "
                f"Pass --data-dir with the task's files in {self.local.folder}/, or run where the hub is reachable.")

    def load(self, data: DataConfig, seed: int) -> Splits:
        return build_splits(self, self.plan(data), data, seed)


def build_splits(task: RowTask, plan: Plan, data: DataConfig, seed: int) -> Splits:
    """Read the plan's files, apply hold-out, few-shot and caps, and say in `policy` what was done."""
    train = task.render_rows(plan.train.read())
    train_note = plan.train.name
    policy = {"source": plan.source}
    if plan.test:  # a selection-only run never reads the reported set's file
        test = [] if data.selection_only else task.render_rows(plan.test.read())
        test_note = plan.test.name
    else:
        train, test = hold_out(train, seed + 1)
        test_note = f"held out of {plan.train.name} (seed {seed + 1})"
        train_note += " less the test hold-out"
    on_reported_set = data.select_on == "validation"
    if on_reported_set:  # as the paper selects: the best evaluation on the set that is reported
        select, select_note = test, f"{test_note}, the reported set itself (--select-on validation, as the paper)"
    elif plan.select:
        select, select_note = task.render_rows(plan.select.read()), plan.select.name
    else:
        train, select = hold_out(train, seed)
        select_note = f"held out of {plan.train.name} (seed {seed})"
        train_note += " less the selection hold-out"
    if data.k_shot:
        train, select, policy["k_shot"] = few_shot(task, data, train, select, seed, sample_select=not on_reported_set)
    if data.max_train_examples:
        train = cap(train, data.max_train_examples, seed)
        policy["max_train_examples"] = str(data.max_train_examples)
    train = [t for example in train for t in task.training_examples(example)]
    if data.selection_only:  # a test hold-out above is still taken out of training, as in the final runs
        test, test_note = [], f"{test_note}: not read (--selection-only)"
    for name, examples in (("train", train), ("select", select), ("test", test)):
        if not examples and not (name == "test" and data.selection_only):
            raise TaskError(f"task {task.name}: the {name} split is empty ({policy.get('source')}); "
                            "give more rows or a smaller --k-shot")
    policy.update(train=f"{train_note} ({len(train)} examples)", select=f"{select_note} ({len(select)} examples)",
                  test=f"{test_note} ({len(test)} examples)")
    return Splits(train, select, test, policy)


def few_shot(task: RowTask, data: DataConfig, train: list[Example], select: list[Example], seed: int,
             sample_select: bool) -> tuple[list[Example], list[Example], str]:
    """(train, select, the policy in words): K in all balanced over the classes where the task has fixed ones, or K
    of each class; groups kept whole. The selection split is sampled to the same size unless it is the reported
    set."""
    classes = task.labels is not None
    per_class = data.k_shot_per_class and classes
    if per_class:
        sample, unit = sample_per_class, "of each class, groups kept whole"
    else:
        sample = functools.partial(sample_in_total, balanced=classes)
        unit = "in all, " + ("balanced over the classes (K // C each, the rest by the seed), " if classes else "") \
            + "groups kept whole"
    train = sample(train, data.k_shot, seed)
    if not sample_select:
        return train, select, f"{data.k_shot} {unit} for train, sampled with seed {seed}; select and test in full"
    return train, sample(select, data.k_shot, seed + 1), (
        f"{data.k_shot} {unit} for train and for select, sampled with seeds {seed} and {seed + 1}; test in full")


class FieldView(Mapping):
    """A row's fields for `str.format_map`: a missing or empty field is a TaskError naming file and line."""

    def __init__(self, row: Row) -> None:
        self.row = row

    def __getitem__(self, key: str) -> Any:
        return str(self.row.get(key)).strip()

    def __iter__(self):
        return iter(self.row.fields)

    def __len__(self) -> int:
        return len(self.row.fields)


def label_index(row: Row, names: tuple[str, ...], field_name: str = "label") -> int:
    """The index of a row's label among the task's label names, accepting the formats the files use:
    a name (string, any case), an integer index (hub class labels, SST-2, COPA) or a boolean (False, True)."""
    raw = row.get(field_name)
    if isinstance(raw, bool) and len(names) == 2:
        return int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(names):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in names:
            return names.index(text)
        if text.isdigit() and int(text) < len(names):
            return int(text)
    raise TaskError(f"{row.origin}: {field_name} {raw!r} is not one of {', '.join(names)} "
                    f"(or their indices 0-{len(names) - 1})")


class LabelTask(BenchmarkTask):
    """A task whose rows map to one of a fixed set of label words (rank classification over the words)."""

    template: str  # str.format over the row's fields
    label_names: tuple[str, ...]  # the labels as the files name them, in the hub's class order
    words: tuple[str, ...]  # the verbalizer of each label name
    positive: str | None = None  # the class whose F1 is reported, where the task reports one

    @property
    def labels(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.words

    def render(self, row: Row) -> list[Example]:
        source = self.template.format_map(FieldView(row))
        return [Example(source, self.words[label_index(row, self.label_names)], self.words, origin=row.origin)]

    def score(self, examples: list[Example], predictions: list[str]) -> dict[str, float]:
        golds = [example.target for example in examples]
        out = {"accuracy": metrics.accuracy(predictions, golds)}
        if "macro_f1" in self.metrics:
            out["macro_f1"] = metrics.macro_f1(predictions, golds, self.words)
        if "f1" in self.metrics and self.positive:
            out["f1"] = metrics.binary_f1(predictions, golds, self.positive)
        return out


def first_per_group(examples: list[Example], predictions: list[str]) -> tuple[list[Example], list[str]]:
    """One (example, prediction) per group: a question scored once however many training copies it has."""
    seen: dict[str, tuple[Example, str]] = {}
    for index, (example, prediction) in enumerate(zip(examples, predictions, strict=True)):
        seen.setdefault(example.group or f"#{index}", (example, prediction))
    return [e for e, _ in seen.values()], [p for _, p in seen.values()]


def with_target(example: Example, target: str) -> Example:
    return replace(example, target=target)
