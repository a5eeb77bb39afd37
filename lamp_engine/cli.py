"""`lamp train`: train one method in this process, with a flag for every configuration field.

The flags are generated from the config dataclasses, so the command line, the queue (`lamp submit`) and the
dashboard form accept exactly the same fields with the same validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from lamp_common.cli import OneLineParser
from lamp_common.result import RunResult
from lamp_engine.config import PROTOCOLS, RunConfig, default_data_dir, flat_fields
from lamp_engine.errors import ConfigError, LampError
from lamp_engine.trackers import TRACKERS, Mirror, MirrorState, TrackerError, chosen
from lamp_engine.trackers.core import tracker_grace_s, trackers_for
from lamp_engine.trackers.runs import LocalRun


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per configuration field (`--pool`, `--q-init`, `--lr`, ...); unset flags keep the defaults."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for item in flat_fields().values():
        group = groups.get(item.section) or groups.setdefault(item.section, parser.add_argument_group(item.section))
        flag = "--" + item.name.replace("_", "-")
        if item.kind is bool:
            group.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=item.help)
        else:
            group.add_argument(flag, dest=item.name, type=item.kind, default=argparse.SUPPRESS, help=item.help)


def add_protocol_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=list(PROTOCOLS), help="; ".join(
        f"{name}: {protocol.description}" for name, protocol in PROTOCOLS.items()) + " (flags given override it)")


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration fields given on the command line (flat names), over the --protocol's when one is named."""
    known = flat_fields()
    given = {k: v for k, v in vars(args).items() if k in known}
    return PROTOCOLS[args.protocol].under(given) if getattr(args, "protocol", None) else given


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """A validated RunConfig: `base` (or the defaults) overridden by the flags given."""
    values = base.flat() if base else {}
    return RunConfig.from_flat({**values, **config_values(args)})


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """--mlflow/--no-mlflow, --wandb/--no-wandb: mirror the run to a tracker or not (default: each one whose
    variable is set where the run trains; docs/trackers.md)."""
    for name, kind in TRACKERS.items():
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                            help=f"mirror the run to {name} (default: when {kind.variable} is set where it trains)")


def tracker_choices(args: argparse.Namespace) -> dict[str, bool]:
    """The trackers turned on or off by a flag; those not named follow their variable."""
    return {name: getattr(args, name) for name in TRACKERS if getattr(args, name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp train", description="Train one soft prompt on a frozen model.")
    parser.add_argument("--output", help="run folder to write (default: runs/<time>-<model>-<task>-<method>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR (flags given override its config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_tracker_arguments(parser)
    add_protocol_argument(parser)
    add_config_arguments(parser)
    return parser


def resolve_run(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The config and the folder to write, validated before any model is loaded."""
    if args.resume:
        folder = Path(args.resume)
        saved = folder / "result.json"
        if not saved.is_file():
            raise ConfigError(f"resume: {folder} holds no result.json; give the folder of an earlier run")
        stored = RunConfig.from_stored(json.loads(saved.read_text())["config"], f"the run in {folder}")
        return config_from_args(args, stored), folder
    config = config_from_args(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{config.model.replace('/', '_')}-{config.task}-{config.method.name}"
    folder = Path(args.output or Path("runs") / name)
    if folder.exists():
        raise ConfigError(f"output: {folder} already exists; pass --resume {folder} to continue it or another --output")
    return config, folder


def progress_callbacks(quiet: bool, mirrored: LocalRun | None = None):
    """A tqdm bar on a terminal; plain silence elsewhere. The mirrored run, if any, records every point."""
    from tqdm import tqdm

    from lamp_engine.train import Callbacks

    bar = None
    enabled = not quiet and sys.stderr.isatty()

    def on_step(step: int, total: int, values: dict[str, float], seconds: float) -> None:
        nonlocal bar
        if mirrored:
            mirrored.on_step(step, total, values, seconds)
        if not enabled:
            return
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, desc="training", unit="step")
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        if mirrored:
            mirrored.on_eval(step, metrics)
        if enabled and bar is not None:
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))

    return Callbacks(on_start=mirrored.on_start if mirrored else None, on_step=on_step, on_eval=on_eval)


def start_mirror(args: argparse.Namespace, config: RunConfig, folder: Path) -> tuple[LocalRun, Mirror] | None:
    """The trackers this run goes to, sending from a background thread; None for none. A tracker asked for that
    cannot be used here (its variable unset, its package missing) is a TrackerError before anything trains."""
    names = chosen(tracker_choices(args))
    if not names:
        return None
    trackers = trackers_for(names)
    for problem in (tracker for tracker in trackers.values() if isinstance(tracker, str)):
        raise TrackerError(problem)
    local = LocalRun(config, folder)
    return local, Mirror(trackers, {name: MirrorState(name) for name in names}, local.snapshot).start()


def finish_mirror(mirrored: tuple[LocalRun, Mirror] | None, result: RunResult | None) -> None:
    """Give the trackers a bounded time to take the end of the run; say which have it and which do not."""
    if mirrored is None:
        return
    local, mirror = mirrored
    local.ended(result)
    for name, state in mirror.finish(tracker_grace_s()).items():
        where = f" ({state.url})" if state.url else ""
        if state.finished:
            print(f"{name}: mirrored{where}", file=sys.stderr)
        else:
            print(f"{name}: behind, not everything was sent ({state.error or 'still sending'}){where}",
                  file=sys.stderr)


def summary(result: RunResult, folder: Path) -> str:
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in result.metrics.items())
    return (f"{result.status}: {result.method} on {result.model} / {result.task}: {metrics or 'no metrics'}"
            f" | trainable {result.trainable_params:,} params, {result.prompt_tokens} prompt tokens"
            f" | {result.train_seconds:.1f} s training, peak {result.peak_memory_mb:.0f} MB | {folder}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    try:
        config, folder = resolve_run(args)
        config = config.with_data_dir(default_data_dir())
        mirrored = start_mirror(args, config, folder)
        from lamp_engine.train import train

        try:
            result = train(config, folder, progress_callbacks(args.quiet, mirrored and mirrored[0]),
                           resume=bool(args.resume))
        except BaseException:
            finish_mirror(mirrored, None)
            raise
    except LampError as exc:
        print(f"lamp train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lamp train: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(summary(result, folder))
    finish_mirror(mirrored, result)
    return 0
