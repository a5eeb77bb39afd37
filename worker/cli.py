"""Queue and store commands: submit, sweep, status, runs, cancel, retry, delete, export and worker.

Every user mistake (bad flag, unknown run, unreachable Redis or database) ends in one line on stderr and exit
code 2. Nothing here imports torch: the training happens in the worker's job function. The commands act as the
OS user (store/accounts.py says when that user is an admin); cancel, retry and delete are recorded with that name.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError

from lamp_common.cli import OneLineParser
from lamp_common.errors import LampError
from lamp_engine.cli import (
    add_config_arguments,
    add_protocol_argument,
    add_tracker_arguments,
    config_from_args,
    config_values,
    tracker_choices,
)
from lamp_engine.config import RunConfig, expand_grid, flat_fields
from lamp_engine.errors import ConfigError
from store.accounts import command_line_actor
from store.artifacts import INTERNAL_FILES, run_dir
from store.audit import actions_on
from store.db import session_scope
from store.files import materialise_run, stored_files
from store.queries import get_run, list_runs
from store.settings import max_sweep_runs
from store.status import RunStatus
from worker import queue


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """--grid rank=4,8,16 --grid method=lamp,pt -> {"rank": [4, 8, 16], "method": ["lamp", "pt"]}."""
    known = flat_fields()
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"grid: {item!r} should look like FIELD=V1,V2 (e.g. rank=4,8,16)")
        if key not in known:
            raise ConfigError(f"{key}: unknown configuration field in --grid")
        parse = _parse_bool if known[key].kind is bool else known[key].kind
        try:
            grid[key] = [parse(value.strip()) for value in values.split(",")]
        except ValueError as exc:
            raise ConfigError(f"{key}: bad grid value ({exc})") from None
    return grid


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def cmd_submit(args: argparse.Namespace) -> int:
    """Prints the run's id (for scripts) and, on stderr, what it will train before any model loads."""
    config = config_from_args(args)
    run_id = queue.submit_run(config, job_timeout=args.timeout, trackers=tracker_choices(args))
    print(run_id)
    print(f"run {run_id} queued: {config.method.name} on {config.model} / {config.task}, {describe_cost(config)}",
          file=sys.stderr)
    return 0


def describe_cost(config: RunConfig) -> str:
    count = config.trainable_params_before_loading()
    params = f"{count:,} trainable parameters" if count is not None else "trainable parameters known once it loads"
    return f"{params}, {config.method.prompt_tokens} prompt tokens"


def cmd_sweep(args: argparse.Namespace) -> int:
    if not args.grid and not args.tune:
        raise ConfigError("grid: give --grid FIELD=V1,V2 (e.g. --grid rank=4,8), or --tune lr for one run at its "
                          "best learning rate")
    grid = parse_grid(args.grid or [])
    configs = expand_grid(config_values(args), grid, limit=max_sweep_runs())
    if args.tune:
        sweep_id, run_ids = queue.submit_tuned(configs, grid, args.name)
        print(f"sweep {sweep_id}: learning-rate search runs {' '.join(map(str, run_ids))}; the final runs are "
              "queued at the chosen rate when the search ends")
        return 0
    sweep_id, run_ids = queue.submit_sweep(configs, grid, args.name, trackers=tracker_choices(args))
    print(f"sweep {sweep_id}: runs {' '.join(map(str, run_ids))}")
    return 0


def _describe(run_dict: dict[str, Any]) -> str:
    return "\n".join(f"{key:>24}: {value}" for key, value in run_dict.items() if value is not None)


def cmd_status(args: argparse.Namespace) -> int:
    with session_scope() as session:
        data = get_run(session, args.run_id, deleted_too=True).to_dict()
        actions = actions_on(session, args.run_id)
    if data["status"] == RunStatus.QUEUED and not data["deleted_at"]:
        data["queue_position"] = queue.queue_position(args.run_id)
    if args.json:
        _print_json({**data, "actions": [action.to_dict() for action in actions]})
    else:
        print(_describe({key: value for key, value in data.items() if key != "config"}))
        print(f"{'config':>24}: {json.dumps(data['config'], sort_keys=True)}")
        for index, action in enumerate(actions):
            print(f"{'actions' if index == 0 else '':>24}: {action}")
    return 0


def _main_metric(data: dict[str, Any]) -> str:
    if data["main_metric_value"] is None:
        return ""
    return f"{data['main_metric']}={data['main_metric_value']:.4f}"


def cmd_runs(args: argparse.Namespace) -> int:
    with session_scope() as session:
        rows = [run.to_dict() for run in list_runs(session, limit=args.limit, status=args.status)]
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'id':>5}  {'status':<9}  {'method':<8}  {'model':<16}  {'task':<8}  {'progress':>8}  {'metric':<18}  "
          f"{'created':<19}  by")
    for row in rows:
        print(f"{row['id']:>5}  {row['status']:<9}  {row['method']:<8}  {row['model'][:16]:<16}  "
              f"{row['task'][:8]:<8}  {row['progress']:>8.0%}  {_main_metric(row):<18}  {row['created_at'][:19]}  "
              f"{row['submitted_by'] or ''}")
        if row.get("health"):
            print(f"{'':>5}  {row['health']}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    print(f"run {args.run_id}: {queue.cancel_run(args.run_id, command_line_actor(), force=args.force)}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    print(queue.retry_run(args.run_id, command_line_actor()))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    queue.delete_run(args.run_id, command_line_actor())
    print(f"run {args.run_id}: deleted")
    return 0


def _copy_local_folder(source: Path, target: Path) -> list[str]:
    """A run that ended before files moved into the store: copy its local folder (never a path outside it)."""
    names = [path.name for path in sorted(source.iterdir())
             if path.name not in INTERNAL_FILES and not path.is_symlink()] if source.is_dir() else []
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        else:
            shutil.copy2(source / name, target / name)
    return names


def cmd_export(args: argparse.Namespace) -> int:
    """Write a run's files (all but the trainer state and the dispersion data) to a folder, from the store."""
    with session_scope() as session:
        run = get_run(session, args.run_id)
        stored = [f for f in stored_files(session, run.id) if f.top not in INTERNAL_FILES]
        source, status = run_dir(run), run.status
    target = Path(args.to or f"lamp-run-{args.run_id}")
    target.mkdir(parents=True, exist_ok=True)
    problems = materialise_run(args.run_id, target, skip=INTERNAL_FILES) if stored else []
    if not stored and not _copy_local_folder(source, target):
        raise LampError(f"run {args.run_id}: no files stored (status {status}); they are stored when it ends")
    print(target)
    if problems:
        raise LampError("; ".join(problems))
    return 0


def cmd_sync_trackers(args: argparse.Namespace) -> int:
    """Send the run's trackers what they miss, now; one line per tracker. Exit code 1 while one is behind."""
    from worker.trackers import sync_run

    with session_scope() as session:
        get_run(session, args.run_id)  # an unknown run is one line
    states = sync_run(args.run_id)
    if not states:
        print(f"run {args.run_id}: mirrored to no tracker (set LAMP_MLFLOW_TRACKING_URI or LAMP_WANDB_PROJECT)")
    for name, state in states.items():
        where = f" {state.url}" if state.url else ""
        print(f"{name}: {'up to date' if state.finished else 'behind: ' + (state.error or 'the run goes on')}{where}")
    return 0 if all(state.finished for state in states.values()) else 1


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.runner import start_worker

    queues = [name.strip() for name in args.queue.split(",") if name.strip()]
    return 0 if start_worker(queues, burst=args.burst, gpu=args.gpu, name=args.name) else 1


def _run_id_parser(name: str, help_text: str) -> OneLineParser:
    parser = OneLineParser(prog=f"lamp {name}", description=help_text)
    parser.add_argument("run_id", type=int, help="run id (see `lamp runs`)")
    return parser


def build_parser(name: str) -> OneLineParser:
    """The parser of one subcommand (each is invoked as its own `lamp NAME`)."""
    if name in ("submit", "sweep"):
        parser = OneLineParser(prog=f"lamp {name}", description="queue runs for a worker; prints the ids")
        add_protocol_argument(parser)
        add_tracker_arguments(parser)
        add_config_arguments(parser)
        parser.add_argument("--timeout", type=int, default=queue.DEFAULT_JOB_TIMEOUT_S,
                            help="seconds a run may take before the worker stops it")
        if name == "sweep":
            parser.add_argument("--grid", action="append", metavar="FIELD=V1,V2",
                                help="a config field and its values; repeat for a grid (e.g. --grid rank=4,8)")
            parser.add_argument("--name", default="sweep", help="a name for the sweep")
            parser.add_argument("--tune", choices=["lr"],
                                help="lr: each method x model x task at its own best learning rate: its family's "
                                     "grid (lamp_engine/methods.py) trains on the first seed, scored on the "
                                     "selection split only, then every seed at the chosen rate")
        return parser
    if name in ("status", "cancel", "retry", "delete", "export", "sync-trackers"):
        parser = _run_id_parser(name, {"status": "show one run and who acted on it", "cancel": "cancel or stop a run",
                                       "sync-trackers": "send a run's trackers (MLflow, W&B) what they miss",
                                       "retry": "queue a failed or cancelled run again",
                                       "delete": "delete a finished run's files and hide it (its record stays)",
                                       "export": "copy a run's prompt files"}[name])
        if name == "status":
            parser.add_argument("--json", action="store_true", help="print the whole row as JSON")
        if name == "cancel":
            parser.add_argument("--force", action="store_true",
                                help="also kill a running run's work horse instead of waiting for its next step")
        if name == "export":
            parser.add_argument("--to", help="target folder (default ./lamp-run-ID)")
        return parser
    if name == "runs":
        parser = OneLineParser(prog="lamp runs", description="list runs, newest first")
        parser.add_argument("--json", action="store_true", help="print the rows as JSON")
        parser.add_argument("--status", choices=list(RunStatus))
        parser.add_argument("--limit", type=int, default=50, help="how many runs (default 50)")
        return parser
    parser = OneLineParser(prog="lamp worker", description="run jobs from the queue (one worker per GPU)")
    parser.add_argument("--queue", default=",".join(queue.DEFAULT_QUEUES),
                        help="comma-separated queue names, in priority order")
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--gpu", help="GPU index for this worker (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--name", help="worker name (default host.gpuN.pid)")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "submit": cmd_submit, "sweep": cmd_sweep, "status": cmd_status, "runs": cmd_runs, "cancel": cmd_cancel,
    "retry": cmd_retry, "delete": cmd_delete, "export": cmd_export, "worker": cmd_worker,
    "sync-trackers": cmd_sync_trackers,
}


def main(argv: list[str]) -> int:
    """argv[0] is the subcommand name (as the `lamp` dispatcher passes it)."""
    name = argv[0]
    if name not in COMMANDS:
        print(f"lamp: {name!r} is not a queue command; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    args = build_parser(name).parse_args(argv[1:])
    try:
        return COMMANDS[name](args)
    except LampError as exc:
        message = str(exc)
    except RedisError as exc:  # Redis went away after the first check
        message = f"REDIS_URL: lost the connection to Redis ({exc}); check that it runs, then try again"
    except OperationalError as exc:  # the database went away after the store was opened
        message = f"DATABASE_URL: the store failed ({str(exc.orig or exc).splitlines()[0]}); check the database"
    print(f"lamp {name}: {message}", file=sys.stderr)
    return 2
