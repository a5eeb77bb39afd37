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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp train", description="Train one soft prompt on a frozen model.")
    parser.add_argument("--output", help="run folder to write (default: runs/<time>-<model>-<task>-<method>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR (flags given override its config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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


def progress_callbacks(quiet: bool):
    """A tqdm bar on a terminal; plain silence elsewhere."""
    from tqdm import tqdm

    from lamp_engine.train import Callbacks

    bar = None
    enabled = not quiet and sys.stderr.isatty()

    def on_step(step: int, total: int, values: dict[str, float], seconds: float) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, desc="training", unit="step")
        bar.update(1)
        bar.set_postfix(loss=f"{values['loss']:.4f}")

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        if enabled and bar is not None:
            bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))

    return Callbacks(on_step=on_step, on_eval=on_eval)


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
        from lamp_engine.train import train

        result = train(config, folder, progress_callbacks(args.quiet), resume=bool(args.resume))
    except LampError as exc:
        print(f"lamp train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lamp train: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(summary(result, folder))
    return 0
