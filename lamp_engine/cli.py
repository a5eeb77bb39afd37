"""`lamp train`: train one prompt in this process, with a flag for every configuration field.

The flags are generated from the config dataclasses, so the command line, the queue (`lamp submit`) and the
dashboard form accept exactly the same fields with the same validation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from lamp_engine.config import SECTIONS, RunConfig
from lamp_engine.errors import ConfigError, LampError


class OneLineParser(argparse.ArgumentParser):
    """Bad flags end with one line on stderr and exit code 2, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def flag_type(annotation: str) -> Any:
    for name, kind in (("bool", "bool"), ("int", int), ("float", float)):
        if name in annotation:
            return kind
    return str


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per configuration field (`--pool`, `--q-init`, `--lr`, ...); unset flags keep the defaults."""
    top = {f.name: f for f in fields(RunConfig) if f.name in ("model", "task")}
    groups = [("run", list(top.values()))] + [(name, list(fields(kind))) for name, kind in SECTIONS.items()]
    for title, section_fields in groups:
        group = parser.add_argument_group(title)
        for f in section_fields:
            default = f.default if f.default is not MISSING else None
            help_text = f"{f.metadata.get('help', '')} (default: {default})"
            kind = flag_type(str(f.type))
            flag = "--" + f.name.replace("_", "-")
            if kind == "bool":
                group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=help_text)
            else:
                group.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration fields given on the command line (flat names)."""
    known = {"model", "task"} | {f.name for kind in SECTIONS.values() for f in fields(kind)}
    return {k: v for k, v in vars(args).items() if k in known}


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """A validated RunConfig: `base` (or the defaults) overridden by the flags given."""
    values = base.flat() if base else {}
    return RunConfig.from_flat({**values, **config_values(args)})


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp train", description="Train one soft prompt on a frozen model.")
    parser.add_argument("--output", help="run folder to write (default: runs/<time>-<model>-<task>-<method>)")
    parser.add_argument("--resume", metavar="DIR", help="continue the run in DIR (flags given override its config)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_arguments(parser)
    return parser


def resolve_run(args: argparse.Namespace) -> tuple[RunConfig, Path]:
    """The config and the folder to write, validated before any model is loaded."""
    if args.resume:
        folder = Path(args.resume)
        saved = folder / "result.json"
        if not saved.is_file():
            raise ConfigError(f"resume: {folder} holds no result.json; give the folder of an earlier run")
        return config_from_args(args, RunConfig.from_dict(json.loads(saved.read_text())["config"])), folder
    config = config_from_args(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{config.model.replace('/', '_')}-{config.task}-{config.prompt.method}"
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

    def on_step(step: int, total: int, values: dict[str, float]) -> None:
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


def summary(result: dict, folder: Path) -> str:
    metrics = ", ".join(f"{k} {v:.2f}" for k, v in result["metrics"].items())
    return (f"{result['status']}: {result['method']} on {result['model']} / {result['task']}: {metrics or 'no metrics'}"
            f" | trainable {result['trainable_params']:,} params, {result['prompt_tokens']} prompt tokens"
            f" | {result['train_seconds']:.1f} s training, peak {result['peak_memory_mb']:.0f} MB | {folder}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    try:
        config, folder = resolve_run(args)
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
