"""`lamp bench speed|table`: re-measure the speed, memory and accuracy claims; writes JSON and Markdown.

    lamp bench speed [--model smollm2-135m | --random-init --shape llama2-7b] [--device cpu|cuda] [--compile] ...
    lamp bench table [--plan full|smoke] [--via-queue] ...
    lamp bench curve [--model smollm2-135m] [--tasks sst2,rte] [--seeds 1,2,3] [--eval-at 25,50,100,150] [--resume] ...
    lamp bench dashboard [--runs 2000] [--points 200000] [--repeat 5] ...
    lamp bench soak [--minutes 5] [--workers 2] [--fault-every 20] ...
    lamp bench gpu [--dry-run] [--steps LIST] [--deadline SECONDS] [--out DIR] ...  (python -m bench.gpu_check)

Results go to --output, a path without extension (NAME.json and NAME.md are written), by default into
./bench-results/ under the current directory: never into the installed package's folder.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from lamp_engine.cli import OneLineParser
from lamp_engine.config import default_data_dir
from lamp_engine.errors import LampError

RESULTS = Path("bench-results")  # relative: the current directory of the command, not the package's folder


def data_dir(given: str | None) -> str | None:
    return given or default_data_dir()


def build_parser() -> argparse.ArgumentParser:
    from bench.curve import DEFAULT_VARIANTS
    from bench.gpu_check import add_arguments as add_gpu_arguments
    from bench.speed import ALL_VARIANTS
    from bench.table import PLANS
    from lamp_engine.config import DTYPES

    parser = OneLineParser(prog="lamp bench", description="Speed, memory and accuracy benchmarks.")
    commands = parser.add_subparsers(dest="bench", required=True, parser_class=OneLineParser)
    speed = commands.add_parser("speed", help="step time, eval throughput and peak memory against PEFT's PT")
    speed.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    speed.add_argument("--random-init", action="store_true", help="build a random model of --shape (no download)")
    speed.add_argument("--shape", help="random-init shape: llama2-7b, t5-3b, tiny-llama, tiny-t5")
    speed.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    speed.add_argument("--dtype", default="auto", choices=DTYPES,
                       help="frozen models' weights (default auto: bf16 on cuda, fp32 on cpu)")
    speed.add_argument("--batch-size", type=int, help="default: 8 on cpu, 16 on cuda")
    speed.add_argument("--source-length", type=int, help="tokens of source text per example (cpu 128, cuda 256)")
    speed.add_argument("--length", type=int, default=100, help="prompt length l")
    speed.add_argument("--rank", type=int, default=8, help="rank r")
    speed.add_argument("--rounds", type=int, default=3, help="measured rounds")
    speed.add_argument("--warmup-rounds", type=int, default=1, help="rounds run first and not reported")
    speed.add_argument("--steps", type=int, default=2, help="training steps per variant per round")
    speed.add_argument("--eval-repeats", type=int, default=1, help="evaluation passes per variant per round")
    speed.add_argument("--variants", default=",".join(ALL_VARIANTS), help="comma-separated subset")
    speed.add_argument("--compile", action="store_true", help="also measure floor, pt, lamp_p4 under torch.compile")
    speed.add_argument("--task", default="sst2", help="task whose text fills the sources (real models)")
    speed.add_argument("--data-dir", help="task data folder (default: ../shared/data or LAMP_DATA_DIR)")
    speed.add_argument("--output", help="output path without extension (default: ./bench-results/speed-<setting>)")
    curve = commands.add_parser("curve", help="time to accuracy: accuracy against seconds of training")
    curve.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    curve.add_argument("--tasks", default="sst2", help="comma-separated tasks (default: sst2)")
    curve.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                       help=f"comma-separated (default: {','.join(DEFAULT_VARIANTS)})")
    curve.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: 1,2,3)")
    curve.add_argument("--steps", type=int, default=150, help="training steps of each variant (default: 150)")
    curve.add_argument("--eval-at", help="comma-separated steps at which the evaluation set is scored; the last "
                                         "is --steps (default: a sixth, a third, two thirds and all of --steps)")
    curve.add_argument("--batch-size", type=int, default=8)
    curve.add_argument("--max-source-length", type=int, default=256)
    curve.add_argument("--max-eval-examples", type=int, help="cap the evaluation set (a screening run; default: all)")
    curve.add_argument("--dtype", default="auto", choices=DTYPES)
    curve.add_argument("--lr", type=float, help="one learning rate for every variant (default: each family's)")
    curve.add_argument("--lamp", action="append", default=[], metavar="KEY=VALUE",
                       help="a LAMP setting for every LAMP variant, e.g. --lamp rank=16, or a research lever of "
                            "bench/ablations.py, e.g. --lamp factor_lr=scaled (repeatable)")
    curve.add_argument("--data-dir", help="task data folder (default: ../shared/data or LAMP_DATA_DIR)")
    curve.add_argument("--train-file", help="with --tasks custom: the CSV or JSONL file to train on")
    curve.add_argument("--eval-file", help="with --tasks custom: the file to evaluate on")
    curve.add_argument("--output", help="output path without extension (default: ./bench-results/curve-<model>)")
    curve.add_argument("--resume", action="store_true",
                       help="keep the seeds the report at --output already has (same settings, same kind of "
                            "machine) and run only the others: a sitting split across sessions, or an interrupted one")
    table = commands.add_parser("table", help="accuracy: methods x tasks x seeds, and the ablations")
    table.add_argument("--plan", default="full", choices=sorted(PLANS), help="which grid of runs (default: full)")
    table.add_argument("--parts", help="comma-separated subset of the plan's parts (e.g. main,pool)")
    table.add_argument("--models", help="comma-separated subset of the plan's models (e.g. minilm-l6)")
    table.add_argument("--tasks", help="comma-separated subset of the plan's tasks (e.g. cb,rte)")
    table.add_argument("--seeds", help="comma-separated subset of the plan's seeds (e.g. 1)")
    table.add_argument("--methods", help="comma-separated subset of the plan's methods (e.g. lora,dora)")
    table.add_argument("--data-dir", help="task data folder (default: ../shared/data or LAMP_DATA_DIR)")
    table.add_argument("--work-dir", default="runs/bench-table", help="where run folders go (reused on rerun)")
    table.add_argument("--via-queue", action="store_true", help="submit the runs to the worker queue instead")
    table.add_argument("--tune-lr", action="store_true",
                       help="each method at its own best learning rate: its family's grid on the first seed, scored "
                            "on the selection split only, then every seed at the chosen rate")
    table.add_argument("--output", help="output path without extension (default: ./bench-results/table-<plan>)")
    dashboard = commands.add_parser("dashboard", help="time to idle of each dashboard view in Chromium with a store "
                                                      "of many runs")
    dashboard.add_argument("--runs", type=int, default=2000, help="runs in the made-up store (default: 2000)")
    dashboard.add_argument("--points", type=int, default=200_000,
                           help="metric points, spread evenly over the runs (default: 200000)")
    dashboard.add_argument("--repeat", type=int, default=5, help="loads of each view each way (default: 5)")
    dashboard.add_argument("--budget-s", type=float, default=1.0,
                           help="exit 1 when a view's median time to idle, switched to from another view in the "
                                "open dashboard, is longer (default: 1)")
    dashboard.add_argument("--load-budget-s", type=float, default=2.0,
                           help="exit 1 when the first load, or a view's median opened from its address (a full "
                                "page load), takes longer (default: 2)")
    dashboard.add_argument("--home", help="a new folder to hold the store and keep it (default: a temporary one, "
                                          "deleted afterwards); DATABASE_URL, where set, is filled instead of SQLite")
    dashboard.add_argument("--output", help="output path without extension (default: ./bench-results/dashboard)")
    soak = commands.add_parser("soak", help="a worker fleet on real Redis and PostgreSQL, shot at, then checked")
    soak.add_argument("--minutes", type=float, default=5.0, help="how long to submit and shoot (default: 5)")
    soak.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    soak.add_argument("--submitters", type=int, default=2, help="processes that queue runs (default: 2)")
    soak.add_argument("--fault-every", type=float, default=20.0, help="mean seconds between faults (default: 20)")
    soak.add_argument("--steps", type=int, default=60, help="training steps of each tiny-t5 run (default: 60)")
    soak.add_argument("--drain", type=float, default=300.0,
                      help="seconds the fleet may take to finish what is queued at the end (default: 300)")
    soak.add_argument("--seed", type=int, default=0, help="seed of the fault schedule and the runs (default: 0)")
    soak.add_argument("--redis-url", help="an existing Redis to use (default: a private one it starts and restarts)")
    soak.add_argument("--database-url", help="an existing PostgreSQL to use, with --redis-url (default: a private one)")
    soak.add_argument("--output", help="output path without extension (default: ./bench-results/soak)")
    gpu = commands.add_parser("gpu", help="the GPU path checked in one command on a GPU machine (--dry-run: the CPU)")
    add_gpu_arguments(gpu)
    return parser


def run_speed_command(args: argparse.Namespace) -> int:
    from bench.speed import SpeedSettings, markdown, run_speed
    from lamp_engine.errors import ConfigError

    if args.random_init != bool(args.shape):
        raise ConfigError("shape: --random-init and --shape go together (e.g. --random-init --shape llama2-7b)")
    gpu = args.device == "cuda"
    settings = SpeedSettings(
        model=args.model, shape=args.shape, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size or (16 if gpu else 8), source_length=args.source_length or (256 if gpu else 128),
        length=args.length, rank=args.rank, rounds=args.rounds, warmup_rounds=args.warmup_rounds,
        steps=args.steps, eval_repeats=args.eval_repeats,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()), compile=args.compile,
        task=args.task, data_dir=data_dir(args.data_dir))
    report = run_speed(settings, log=lambda line: print(line, file=sys.stderr))
    name = (f"speed-{args.shape or args.model}-{args.device}" + (f"-{args.dtype}" if args.dtype != "auto" else "")
            + ("-compile" if args.compile else ""))
    write(report, markdown(report), Path(args.output) if args.output else RESULTS / name)
    return 0


def run_table_command(args: argparse.Namespace) -> int:
    from bench.table import markdown, plan_runs, run_table
    from lamp_engine.errors import ConfigError

    parts = [p.strip() for p in args.parts.split(",")] if args.parts else None
    def subset(text: str | None, kind: type = str) -> list | None:
        return [kind(item.strip()) for item in text.split(",") if item.strip()] if text else None

    runs = plan_runs(args.plan, data_dir(args.data_dir), parts, subset(args.models), subset(args.tasks),
                     subset(args.seeds, int), subset(args.methods))
    output = Path(args.output) if args.output else RESULTS / f"table-{args.plan}"

    def save_partial(report: dict) -> None:  # an interrupted table still leaves its finished runs
        output.parent.mkdir(parents=True, exist_ok=True)
        report_file(output, ".json").write_text(json.dumps({**report, "plan": args.plan}, indent=2))

    if args.tune_lr and args.via_queue:
        raise ConfigError("tune-lr: runs in this process; for the queue use lamp sweep --tune lr")
    report = run_table(runs, Path(args.work_dir), via_queue=args.via_queue,
                       log=lambda line: print(line, file=sys.stderr), save=save_partial, tune_lr=args.tune_lr)
    write({**report, "plan": args.plan}, markdown(report), output)
    return 0


def run_curve_command(args: argparse.Namespace) -> int:
    from bench.curve import CurveSettings, chart, markdown, run_curve, setting
    from lamp_engine.errors import ConfigError

    def items(text: str, kind: type = str) -> tuple:
        try:
            return tuple(kind(item.strip()) for item in text.split(",") if item.strip())
        except ValueError:
            raise ConfigError(f"{text!r} is not a list of {kind.__name__} values separated by commas") from None

    lamp = dict(setting(item, f"lamp: {item!r}") for item in args.lamp)
    eval_at = items(args.eval_at, int) if args.eval_at else tuple(
        sorted({max(1, args.steps // 6), max(1, args.steps // 3), max(1, 2 * args.steps // 3), args.steps}))
    variants = tuple(v.strip() for v in re.split(r",(?![^\[]*\])", args.variants) if v.strip())  # [a=1,b=2] whole
    settings = CurveSettings(
        model=args.model, tasks=items(args.tasks), variants=variants, seeds=items(args.seeds, int),
        steps=args.steps, eval_at=eval_at, batch_size=args.batch_size, max_source_length=args.max_source_length,
        max_eval_examples=args.max_eval_examples, dtype=args.dtype, lr=args.lr, lamp=lamp,
        data_dir=data_dir(args.data_dir), train_file=args.train_file, eval_file=args.eval_file)
    output = Path(args.output) if args.output else RESULTS / f"curve-{args.model}"

    def save_partial(report: dict) -> None:  # an interrupted bench still leaves the seeds it finished
        output.parent.mkdir(parents=True, exist_ok=True)
        report_file(output, ".json").write_text(json.dumps(report, indent=2))

    previous = earlier_report(report_file(output, ".json")) if args.resume else None
    report = run_curve(settings, log=lambda line: print(line, file=sys.stderr), save=save_partial, previous=previous)
    write(report, markdown(report), output)
    chart(report).save(str(report_file(output, ".html")))
    return 0


def run_dashboard_command(args: argparse.Namespace) -> int:
    from bench.dashboard import DashboardSettings, markdown, over_budget, run_dashboard

    settings = DashboardSettings(runs=args.runs, points=args.points, repeat=args.repeat, budget_s=args.budget_s,
                                 load_budget_s=args.load_budget_s)
    report = run_dashboard(settings, args.home, log=lambda line: print(line, file=sys.stderr))
    write(report, markdown(report), Path(args.output) if args.output else RESULTS / "dashboard")
    slow = over_budget(report)
    if slow:
        print(f"dashboard: over the {args.budget_s:g} s budget: {', '.join(slow)}", file=sys.stderr)
    return 1 if slow else 0


def run_soak_command(args: argparse.Namespace) -> int:
    from bench.soak import SoakSettings, markdown, run_soak

    settings = SoakSettings(minutes=args.minutes, workers=args.workers, submitters=args.submitters,
                            fault_every_s=args.fault_every, steps=args.steps, drain_s=args.drain, seed=args.seed,
                            redis_url=args.redis_url, database_url=args.database_url)
    report = run_soak(settings, log=lambda line: print(line, file=sys.stderr))
    write(report, markdown(report), Path(args.output) if args.output else RESULTS / "soak")
    for line in report["broken"]:
        print(f"soak: invariant broken: {line}", file=sys.stderr)
    return 1 if report["broken"] else 0


def run_gpu_command(args: argparse.Namespace) -> int:
    from bench.gpu_check import run

    return run(args)


def earlier_report(path: Path) -> dict | None:
    """The report `--resume` continues, or None where there is none yet (the sitting starts from nothing)."""
    from lamp_engine.errors import ConfigError

    if not path.exists():
        print(f"resume: no report at {path} yet; running every seed", file=sys.stderr)
        return None
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"resume: {path} is not a JSON report ({error}); give another --output") from None


def report_file(output: Path, extension: str) -> Path:
    """--output plus its extension: a dot inside the name (`lamp-lr0.003`) stays part of it."""
    if output.suffix in (".json", ".md", ".html"):  # the user named one of the files
        output = output.with_suffix("")
    return output.with_name(output.name + extension)


def write(report: dict, table: str, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    report_file(output, ".json").write_text(json.dumps(report, indent=2))
    report_file(output, ".md").write_text(table)
    print(table)
    print(f"wrote {report_file(output, '.json')} and {report_file(output, '.md')}", file=sys.stderr)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    commands = {"speed": run_speed_command, "table": run_table_command, "curve": run_curve_command,
                "dashboard": run_dashboard_command, "soak": run_soak_command, "gpu": run_gpu_command}
    try:
        return commands[args.bench](args)
    except LampError as exc:
        print(f"lamp bench: error: {exc}", file=sys.stderr)
        return 2
