"""The `lamp` console command: a dispatcher above every package, importing each subcommand lazily.

Each subcommand is a `main(argv) -> int` function in the package that owns it, so `lamp runs` never imports
torch and no package imports one above it.
"""

from __future__ import annotations

import importlib
import os
import sys

SIGPIPE_EXIT = 128 + 13  # what a shell reports for a command ended by a closed pipe
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("lamp_engine.cli", "train one run in this process"),
    "tasks": ("lamp_engine.tasks.cli", "list the tasks, their metrics and the data found here"),
    "submit": ("worker.cli", "queue one run for a worker; prints its id"),
    "sweep": ("worker.cli", "queue a grid of runs"),
    "status": ("worker.cli", "show one run"),
    "runs": ("worker.cli", "list runs"),
    "cancel": ("worker.cli", "cancel a queued run or stop a running one"),
    "retry": ("worker.cli", "queue a failed or cancelled run again"),
    "delete": ("worker.cli", "delete a finished run's files (its record stays)"),
    "export": ("worker.cli", "copy a run's prompt files to a folder"),
    "sync-trackers": ("worker.cli", "send a run's trackers (MLflow, W&B) what they miss"),
    "worker": ("worker.cli", "start a worker"),
    "migrate": ("store.cli", "upgrade the store's schema to the newest revision"),
    "up": ("app.launcher", "start Redis, the store, a worker and the dashboard"),
    "passwd": ("app.access", "print the hash of a dashboard password, for LAMP_PASSWORD_HASH"),
    "user": ("store.account_cli", "add, list, remove accounts of the dashboard, or change a password"),
    "bench": ("bench.cli", "run the benchmarks"),
    "figure6": ("app.figure6", "write the paper's Figure 6 (PT's vs LAMP's prompt tokens) to a PNG or SVG"),
}


def usage() -> str:
    lines = ["usage: lamp COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`lamp COMMAND --help` describes each one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int | str | None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"lamp: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        try:
            code = module.main([name, *rest])
        except SystemExit as ended:  # --help and usage errors leave through argparse
            code = ended.code
        sys.stdout.flush()
    except BrokenPipeError:  # `lamp runs | head`: the reader left; stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return SIGPIPE_EXIT
    return code


if __name__ == "__main__":
    sys.exit(main())
