"""Reading task data through the `datasets` library: local files in their original formats, hub ids, user files.

Every reader returns `Row`s: the row's fields plus where it came from ("file, line N"), so any later complaint
about a row (a missing field, an unknown label, a text that had to be truncated) can name the file and line.
"""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets

from lamp_engine.errors import TaskError

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

HUB_PROBE_SECONDS = 3.0


@dataclass(frozen=True)
class Row:
    """One raw row of a task file and where it came from."""

    fields: dict[str, Any]
    origin: str  # "path, line N" (or "hub id:config/split, row N")

    def get(self, name: str) -> Any:
        """A required field; a TaskError naming the file, line and field when it is absent or empty."""
        value = self.fields.get(name)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise TaskError(f"{self.origin}: missing field {name!r}")
        if isinstance(value, str) and not value.strip():
            raise TaskError(f"{self.origin}: field {name!r} is empty")
        return value


def read_text(path: Path) -> str:
    """The file's text; a binary or non-UTF-8 file is a TaskError naming the file and the first bad byte."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{path}: not a UTF-8 text file (undecodable byte at offset {exc.start}); give a CSV or "
                        "JSONL file saved as UTF-8") from None
    if "\x00" in text:
        raise TaskError(f"{path}: not a text file (it holds NUL bytes); give a CSV or JSONL file")
    return text


def count_rows(path: Path) -> int:
    """Non-blank lines of a line-oriented file (a cheap row count for listings)."""
    return sum(1 for line in read_text(path).splitlines() if line.strip())


def _nonblank_line_numbers(path: Path) -> list[int]:
    numbers = [number for number, line in enumerate(read_text(path).splitlines(), start=1) if line.strip()]
    if not numbers:
        raise TaskError(f"{path}: the file is empty")
    return numbers


def _load(builder: str, path: Path, **kwargs: Any) -> datasets.Dataset:
    """`datasets.load_dataset` on one local file; a file it cannot parse becomes a TaskError naming the file."""
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as exc:  # the library's parse errors come in many types; the message is what the user needs
        cause = exc.__cause__ or exc
        raise TaskError(f"{path}: could not be read as {builder} ({type(cause).__name__}: {cause})") from None


def read_jsonl(path: Path) -> list[Row]:
    """Rows of a JSON-lines file; a malformed line is reported by file and line number before `datasets` parses."""
    numbers = _nonblank_line_numbers(path)
    lines = read_text(path).splitlines()
    for number in numbers:
        try:
            value = json.loads(lines[number - 1])
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}, line {number}: malformed JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise TaskError(f"{path}, line {number}: expected a JSON object, got {type(value).__name__}")
    dataset = _load("json", path)
    return [Row(row, f"{path}, line {number}") for row, number in zip(dataset, numbers, strict=True)]


def read_labelled_lines(path: Path) -> list[Row]:
    """Rows of a sentence-level SST-style file: `<label> <sentence>` on each line."""
    numbers = _nonblank_line_numbers(path)
    dataset = _load("text", path)
    rows = []
    for number, row in zip(numbers, (r for r in dataset if r["text"].strip()), strict=True):
        label, _, sentence = row["text"].strip().partition(" ")
        if not label.isdigit() or not sentence.strip():
            raise TaskError(f"{path}, line {number}: expected '<label> <sentence>'")
        rows.append(Row({"sentence": sentence.strip(), "label": int(label)}, f"{path}, line {number}"))
    return rows


def read_table(path: Path, columns: list[str]) -> list[Row]:
    """Rows of a user's CSV or JSONL file (by extension); each of `columns` must exist."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = read_jsonl(path)
        first_line = 0
    elif suffix in (".csv", ".tsv"):
        rows = _read_delimited(path, sep="\t" if suffix == ".tsv" else ",")
        first_line = 1
    else:
        raise TaskError(f"{path}: unsupported file type {suffix or '(none)'}; use .csv, .tsv or .jsonl")
    present = set(rows[0].fields)
    for column in columns:
        if column not in present:
            where = "the header (line 1)" if first_line else "line 1"
            raise TaskError(f"{path}: column {column!r} not found in {where}; columns are "
                            f"{', '.join(sorted(present))}. Name the right one with the column flags.")
    return rows


def hub_unreachable_reason() -> str | None:
    """Why the dataset hub cannot be used right now, or None when a download can be tried.

    Checked before `load_dataset` because the library retries an unreachable host for about 20 seconds.
    """
    if datasets.config.HF_HUB_OFFLINE:
        return None  # the library itself answers from its local cache, quickly
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline mode is set ({name})"
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a proxy decides; let the library try
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as exc:
        return f"{host} is unreachable ({exc.strerror or exc})"
    return None


def read_hub(repo: str, config: str, split: str) -> list[Row]:
    """Rows of one split of a hub dataset; raises `HubUnavailable` with the reason when it cannot be fetched."""
    reason = hub_unreachable_reason()
    if reason:
        raise HubUnavailable(reason)
    try:
        dataset = datasets.load_dataset(repo, config, split=split)
    except Exception as exc:  # connection, missing config, cache miss in offline mode: all mean "not available"
        if datasets.config.HF_HUB_OFFLINE:
            raise HubUnavailable("offline mode is set (HF_HUB_OFFLINE) and the dataset is not in the local "
                                 "cache") from None
        raise HubUnavailable(f"{type(exc).__name__}: {exc}") from None
    return [Row(row, f"hub {repo}:{config}/{split}, row {index + 1}") for index, row in enumerate(dataset)]


class HubUnavailable(Exception):
    """The hub copy of a dataset cannot be read here (the caller turns it into a TaskError naming the task)."""


def _read_delimited(path: Path, **kwargs: Any) -> list[Row]:
    """Rows of a CSV/TSV file with a header line; cells are kept as text ('NA' stays 'NA', blanks stay blank)."""
    if len(_nonblank_line_numbers(path)) < 2:
        raise TaskError(f"{path}: the file has a header but no rows")
    dataset = _load("csv", path, keep_default_na=False, **kwargs)
    return [Row(row, f"{path}, line {index + 2}") for index, row in enumerate(dataset)]


def read_glue_tsv(path: Path) -> list[Row]:
    """Rows of a GLUE TSV file (tab separated, quotes taken literally as GLUE's files need)."""
    return _read_delimited(path, sep="\t", quoting=3)
