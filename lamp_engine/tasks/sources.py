"""Reading task files in their original formats through the `datasets` library."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from lamp_engine.errors import TaskError

datasets.disable_progress_bars()


def find_file(data_dir: str | None, relative: str, task: str) -> Path:
    """The path of one task file under the data folder, or a TaskError saying what is missing."""
    if not data_dir:
        raise TaskError(f"task {task}: no data folder given; pass --data-dir (e.g. ../shared/data)")
    root = Path(data_dir)
    if not root.is_dir():
        raise TaskError(f"task {task}: data folder {root} does not exist")
    path = root / relative
    if not path.is_file():
        raise TaskError(f"task {task}: file {path} not found in the data folder")
    return path


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a malformed line is reported by file and line number."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}, line {number}: malformed JSON ({exc.msg})") from None
    if not any(line.strip() for line in lines):
        raise TaskError(f"{path}: the file is empty")
    return list(datasets.load_dataset("json", data_files=str(path), split="train"))


def read_labelled_lines(path: Path) -> list[dict]:
    """Rows of a sentence-level SST-style file: `<label> <sentence>` on each line."""
    rows = []
    for number, row in enumerate(datasets.load_dataset("text", data_files=str(path), split="train"), start=1):
        label, _, sentence = row["text"].partition(" ")
        if not label.isdigit() or not sentence.strip():
            raise TaskError(f"{path}, line {number}: expected '<label> <sentence>'")
        rows.append({"sentence": sentence.strip(), "label": int(label)})
    if not rows:
        raise TaskError(f"{path}: the file is empty")
    return rows
