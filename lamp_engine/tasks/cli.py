"""`lamp tasks`: the task list with metrics, the data found on this machine and row counts.

`lamp tasks --task NAME` loads one task and shows its split policy, example counts and a rendered example, so a
user can see what a run would train and report on before starting it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import datasets

from lamp_common.cli import OneLineParser
from lamp_engine.config import DataConfig, default_data_dir
from lamp_engine.errors import LampError
from lamp_engine.tasks import CUSTOM_TASK, TASKS, get_task
from lamp_engine.tasks.benchmark import BenchmarkTask
from lamp_engine.tasks.sources import count_rows, hub_unreachable_reason


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp tasks", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=default_data_dir(),
                        help="folder with the original task files (default: $LAMP_DATA_DIR, else ../shared/data "
                             "beside the checkout)")
    parser.add_argument("--task", help="show one task's splits, policy and a rendered example")
    parser.add_argument("--seed", type=int, default=42, help="seed of the hold-out shown with --task")
    parser.add_argument("--k-shot", type=int, help="show the few-shot splits of --task")
    return parser


def file_counts(task: BenchmarkTask, data_dir: str | None) -> str:
    """'train.jsonl 250, val.jsonl 56' for the task's files present here (TSV counts exclude the header)."""
    parts = []
    for path in task.local_files(data_dir).values():
        rows = count_rows(path) - (1 if path.suffix == ".tsv" else 0)
        parts.append(f"{path.name} {rows}")
    return ", ".join(parts) or "-"


def task_table(data_dir: str | None) -> list[str]:
    rows = [("task", "metrics (main first)", "local files (rows)", "hub id")]
    for name, kind in TASKS.items():
        task = kind()
        ordered = [task.main_metric, *(m for m in task.metrics if m != task.main_metric)]
        rows.append((name, ", ".join(ordered), file_counts(task, data_dir), task.hub.name))
    rows.append((CUSTOM_TASK, "accuracy, macro_f1", "your CSV/JSONL: --train-file [--eval-file]", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + "  " + row[3]
            for row in rows]


def show_tables(data_dir: str | None) -> None:
    where = f"data folder {Path(data_dir).resolve()}" if data_dir else "no data folder (pass --data-dir)"
    reason = hub_unreachable_reason()
    if datasets.config.HF_HUB_OFFLINE:
        reason = "offline mode is set (HF_HUB_OFFLINE): only datasets already in the local cache"
    print(f"Sources: {where}; hub {'reachable' if reason is None else 'not usable: ' + reason}\n")
    print("\n".join(task_table(data_dir)))


def show_task(name: str, data: DataConfig, seed: int) -> None:
    task = get_task(name)
    splits = task.load(data, seed)
    print(f"{task.name}: {task.description}")
    print(f"metrics: {', '.join(task.metrics)} (main: {task.main_metric})")
    print(f"labels: {', '.join(task.labels) if task.labels else 'per example (choices vary)'}")
    print("split policy:")
    for key, value in splits.policy.items():
        print(f"  {key}: {value}")
    example = splits.test[0]
    print(f"example ({example.origin}):\n  source: {example.source}\n  target: {example.target}")
    print(f"  choices: {' | '.join(example.choices)}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    if args.data_dir and not Path(args.data_dir).is_dir():
        print(f"lamp tasks: data folder {args.data_dir} does not exist; pass --data-dir", file=sys.stderr)
        return 2
    try:
        if args.task:
            show_task(args.task, DataConfig(data_dir=args.data_dir, k_shot=args.k_shot), args.seed)
        else:
            show_tables(args.data_dir)
    except LampError as exc:
        print(f"lamp tasks: {exc}", file=sys.stderr)
        return 2
    return 0
