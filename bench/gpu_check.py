"""`lamp bench gpu` (or `python -m bench.gpu_check`): the GPU path of LAMP Studio checked in one command, on one GPU
machine with no network (issue 16).

    python -m bench.gpu_check [--dry-run] [--out DIR] [--wheels DIR] [--deadline SECONDS] [--python PYTHON]
                              [--steps LIST] [--variants LIST] [--step-limit SECONDS] [--keep-work]
                              [--max-out-files N] [--target-python X.Y]

Steps (STEPS below), each under its own time limit and all inside one deadline (--deadline, default 480 s on a GPU,
300 s in a dry run: set it to end well inside the time the GPU machine is lent for):
  install      the project's missing packages from the wheel folder (default .gpu-wheels/, prepared by
               `python -m bench.gpu_wheels` on a machine with PyPI), into a private folder put first on PYTHONPATH
  environment  every package the steps import must be there (bench/gpu_requirements.txt); records the GPU,
               driver, CUDA, torch and every package's version
  gpu-tests    the `gpu`-marked tests (tests/test_gpu.py): bf16 backbones of each family, NF4 with double
               quantisation, fp32 prompt parameters, --compile, export/reload of a prompt trained on CUDA
  queued-run   embedded Redis + SQLite, `lamp submit --device cuda`, `lamp worker --gpu 0 --burst`; the run
               must succeed with its peak CUDA memory and step time in the store, and export
  bench-*      `lamp bench speed --device cuda --random-init` on the Llama-2-7B and T5-3B shapes (bf16,
               batch 16, source 256, l = 100, r = 8) against PEFT's prompt tuning and the no-prompt floor
Everything lands in one folder (--out, else $OUT, else runs/gpu-check): summary.md (whose GPU section is the one
docs/benchmarks.md takes), summary.json, check.log, the bench's speed-<shape>.json/.md and details.tar.gz (step
logs, test report, the queued run's row and result); where that is more than --max-out-files (default 8, what a
device call brings back) the speed reports go into the archive too. The last lines printed say which steps ran,
which were skipped and why. Exit code 0 when no step failed, 1 otherwise, 2 for bad usage or (without --dry-run)
no CUDA GPU. The project itself is not installed: PYTHONPATH holds the repository, and `lamp ...` is run as
`python -m lamp_cli ...`.

--steps install,environment,gpu-tests,queued-run,bench runs only those (the others are listed as skipped);
--variants is the bench's comma-separated list (default floor,pt,lamp_p1,lamp_p4,peft_pt; ALL_VARIANTS of
bench/speed.py are accepted). --step-limit caps every step's own time limit. --keep-work keeps the scratch folder
(its path is printed) instead of deleting it.

--dry-run runs the same steps on this machine's CPU: tiny shapes, the queued run with --device cpu, the GPU tests
collected (they skip without CUDA), and the wheel folder only checked (if there is one) against the GPU machine's
CPython (--target-python, default 3.12), not installed. CI runs it (tests/test_gpu_check.py), so the check cannot
rot between GPU sessions.

Each step runs as this module again (`--step NAME`) in a session of its own, so that everything it starts (a
worker, its job's process) can be ended with it; the driver needs only the standard library and psutil until a
step runs (and the project's own modules, which import no third-party package), so it starts on a GPU machine
before the install step has put anything on the path.
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.gpu_steps import (
    Failed,
    Settings,
    Skipped,
    StepRun,
    check_environment,
    install_wheels,
    run_bench,
    run_gpu_tests,
    run_queued_run,
    say,
)
from bench.gpu_summary import FIXED_OUT_FILES, pack_details, print_closing_lines, write_summary
from bench.sessions import end_process, run_in_session
from lamp_common.cli import OneLineParser

REPO = Path(__file__).resolve().parents[1]
SKIPPED = 99  # a step's exit code for "skipped", with its reason in the detail file
SUMMARY_RESERVE_S = 20  # kept back from the deadline for writing the summary
STEP_END_GRACE_S = 10  # what a step past its limit (or interrupted) gets between TERM and KILL
REDIS_END_GRACE_S = 10  # the embedded Redis takes TERM as a request to shut down at its next tick
CORE_VARIANTS = "floor,pt,lamp_p1,lamp_p4,peft_pt"


# --- the steps ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    limit_s: int  # the step's own time limit
    least_s: int  # the least time left worth starting it with


@dataclass(frozen=True)
class Step:
    kind: str  # what --steps names
    body: Callable[[StepRun], str]  # runs in the step's own process; returns the detail line
    gpu: Limits
    dry_run: Limits
    per_shape: bool = False  # runs once per bench shape, as <kind>-<shape>

    def names(self, settings: Settings) -> list[str]:
        return [f"{self.kind}-{shape}" for shape in settings.shapes] if self.per_shape else [self.kind]

    def limits(self, settings: Settings) -> Limits:
        return self.dry_run if settings.dry_run else self.gpu


STEPS = (
    Step("install", install_wheels, gpu=Limits(90, 20), dry_run=Limits(60, 5)),
    Step("environment", check_environment, gpu=Limits(60, 10), dry_run=Limits(60, 5)),
    Step("gpu-tests", run_gpu_tests, gpu=Limits(240, 60), dry_run=Limits(90, 10)),
    Step("queued-run", run_queued_run, gpu=Limits(120, 40), dry_run=Limits(120, 20)),
    Step("bench", run_bench, gpu=Limits(170, 60), dry_run=Limits(90, 15), per_shape=True),
)


def step_named(name: str) -> Step:
    return next(s for s in STEPS if name == s.kind or (s.per_shape and name.startswith(f"{s.kind}-")))


def run_step_inside(name: str, work: Path) -> int:
    """The body of one step, in its own process: the detail line goes to WORK/steps/NAME.detail, the outcome to
    the exit code (0 passed, SKIPPED, 1 failed)."""
    step = StepRun(Settings.load(work / "settings.json"), work, name)
    detail = work / "steps" / f"{name}.detail"
    os.chdir(REPO)
    try:
        detail.write_text(step_named(name).body(step) + "\n")
    except Skipped as reason:
        detail.write_text(f"{reason}\n")
        return SKIPPED
    except Failed as reason:
        detail.write_text(f"{reason}\n")
        say(f"FAILED: {reason}")
        return 1
    return 0


# --- the driver --------------------------------------------------------------------------------------------------

class CheckLog:
    """What the check prints, written to the terminal and to OUT/check.log by this process itself: nothing else
    writes the log, so it is whole when the check returns."""

    def __init__(self, path: Path, terminal: TextIO) -> None:
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close(), after the cleanup)
        self.terminal = terminal

    def write(self, text: str) -> int:
        self.terminal.write(text)
        self.file.write(text)
        self.flush()
        return len(text)

    def flush(self) -> None:
        self.terminal.flush()
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class LogFollower:
    """Copies what a step appends to its own log into the check's log, as it comes (the step writes a file, not a
    pipe, so a process it leaves behind cannot hold the check up)."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def copy_new(self) -> None:
        if data := self.handle.read():
            sys.stdout.write(self.decoder.decode(data))

    def close(self) -> None:
        self.handle.close()


@dataclass
class Check:
    """One check as the driver runs it: its settings, scratch folder, start time and the steps' outcomes."""

    settings: Settings
    work: Path
    start: float = dataclasses.field(default_factory=time.monotonic)
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def elapsed(self) -> int:
        return int(time.monotonic() - self.start)

    def record(self, name: str, outcome: str, seconds: int, detail: str) -> None:
        self.steps.append({"step": name, "outcome": outcome, "seconds": seconds, "detail": detail})

    def step_env(self) -> dict[str, str]:
        """The steps' environment: the wheel folder's site and the repository first on the path, no hub."""
        path = [str(self.work / "site"), str(REPO), os.environ.get("PYTHONPATH", "")]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                "TOKENIZERS_PARALLELISM": "false"}


def step_limit(check: Check, step: Step, name: str) -> int | None:
    """The seconds this step may take, or None (with the reason recorded) where it is not to run."""
    settings = check.settings
    if step.kind not in settings.steps:
        check.record(name, "skipped", 0, f"not selected (--steps {','.join(settings.steps)})")
        return None
    limits = step.limits(settings)
    left = settings.deadline_s - SUMMARY_RESERVE_S - check.elapsed()
    if left < limits.least_s:
        check.record(name, "skipped", 0, f"out of time: {left} s left of the {settings.deadline_s} s deadline, "
                                         f"the step needs at least {limits.least_s} s")
        say(f"step {name}: skipped (out of time)")
        return None
    capped = limits.limit_s if settings.step_limit_s is None else min(limits.limit_s, settings.step_limit_s)
    return min(capped, left)


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:400].replace("\t", " ") if lines else ""


def run_step(check: Check, step: Step, name: str) -> None:
    """Run one step in a session of its own under its time limit, its output streamed here and kept in its log;
    record its outcome, seconds and detail."""
    limit = step_limit(check, step, name)
    if limit is None:
        return
    say(f"step {name}: starting (limit {limit} s, {check.elapsed()} s elapsed)")
    began, log = time.monotonic(), check.work / "logs" / f"{name}.log"
    detail_file = check.work / "steps" / f"{name}.detail"
    command = [check.settings.python, "-m", "bench.gpu_check", "--step", name, "--work", str(check.work)]
    with open(log, "wb") as output:
        follower = LogFollower(log)
        try:
            ended = run_in_session(command, cwd=REPO, env=check.step_env(), output=output, limit_s=limit,
                                   grace_s=STEP_END_GRACE_S, tick=follower.copy_new)
        finally:
            follower.close()
    if ended.survivors:
        say(f"step {name}: processes {ended.survivors} outlived KILL")
    if ended.timed_out:
        outcome, text = "failed", f"timed out after its limit of {limit} s"
    else:
        outcome = {0: "passed", SKIPPED: "skipped"}.get(ended.returncode, "failed")
        text = detail_file.read_text(errors="replace")[:600] if detail_file.exists() else ""
        text = text.replace("\t", " ").replace("\n", " ").rstrip(" ")
        if not text and outcome == "failed":  # no reason given: the log's last line usually is one
            text = f"exit {ended.returncode}: {last_line(log)}"
    seconds = int(time.monotonic() - began)
    check.record(name, outcome, seconds, text)
    say(f"step {name}: {outcome} in {seconds} s" + (f": {text}" if text else ""))


def cuda_visible(check: Check) -> bool:
    probe = [check.settings.python, "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"]
    ended = run_in_session(probe, cwd=REPO, env=check.step_env(), output=subprocess.DEVNULL, limit_s=120, grace_s=5)
    return ended.returncode == 0


def run_steps(check: Check) -> int:
    settings = check.settings
    say(f"{'dry run on the CPU' if settings.dry_run else 'GPU check'}, deadline {settings.deadline_s} s, "
        f"python {settings.python}, output {settings.out}, wheels {settings.wheels}")
    if not settings.dry_run and not cuda_visible(check):
        say(f"no CUDA GPU is visible to {settings.python}: run this on a GPU machine, or pass --dry-run")
        return 2
    for step in STEPS:
        for name in step.names(settings):
            run_step(check, step, name)
    (check.work / "steps.json").write_text(json.dumps(check.steps, indent=2))
    summary = write_summary(settings, check.work, check.steps, check.elapsed())
    speed_packed = pack_details(check.work, settings.out, settings.max_out_files)
    print_closing_lines(summary, settings, speed_packed)
    return 1 if summary["counts"]["failed"] else 0


def redis_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):  # none started, or it is still writing the file
        return None


def clean_up(check: Check) -> None:
    """Stop the embedded Redis the queued run started (it daemonises into a session of its own, so ending the
    step's session does not reach it), wait for it, and remove the scratch folder unless it is to be kept."""
    pid = redis_pid(check.work / "lamp-home" / "redis" / "redis.pid")
    if pid is not None and (left := end_process(pid, REDIS_END_GRACE_S)):
        say(f"the embedded Redis ({left}) outlived KILL")
    if check.settings.keep_work:
        print(f"gpu_check: scratch folder kept: {check.work}", flush=True)
    else:
        shutil.rmtree(check.work, ignore_errors=True)


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_check(settings: Settings) -> int:
    """The whole check, its output kept in OUT/check.log; every process it started has ended when it returns."""
    settings.out.mkdir(parents=True, exist_ok=True)
    for old in [*(settings.out / name for name in FIXED_OUT_FILES), *settings.out.glob("speed-*.json"),
                *settings.out.glob("speed-*.md")]:  # an earlier check's files would mix with this one's
        old.unlink(missing_ok=True)
    check = Check(settings, Path(tempfile.mkdtemp(prefix="lamp-gpu-check.")))
    for folder in ("steps", "logs"):
        (check.work / folder).mkdir()
    settings.save(check.work / "settings.json")
    log = CheckLog(settings.out / "check.log", sys.stdout)
    previous = signal.signal(signal.SIGTERM, interrupt)
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = log
    try:
        check.start = time.monotonic()
        return run_steps(check)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception:  # the check's own fault: its traceback belongs in check.log, which may be all that comes back
        say("the check itself failed:")
        traceback.print_exc()
        return 1
    finally:
        clean_up(check)
        sys.stdout, sys.stderr = stdout, stderr
        signal.signal(signal.SIGTERM, previous)
        log.close()


# --- the command line --------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The check's flags, on its own parser or on `lamp bench gpu`'s."""
    parser.add_argument("--dry-run", action="store_true", help="the same steps on this machine's CPU, tiny shapes")
    parser.add_argument("--out", help="the output folder (default: $OUT, else runs/gpu-check in the repository)")
    parser.add_argument("--wheels", default=str(REPO / ".gpu-wheels"), help="the wheel folder (default .gpu-wheels/)")
    parser.add_argument("--deadline", type=seconds, metavar="SECONDS",
                        help="the whole check's deadline (default 480, in a dry run 300)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter the steps run (default: this one); on a GPU machine the one with torch")
    parser.add_argument("--steps", type=step_kinds, default=tuple(s.kind for s in STEPS), metavar="LIST",
                        help=f"comma-separated subset of {','.join(s.kind for s in STEPS)}")
    parser.add_argument("--variants", default=CORE_VARIANTS, help=f"the bench's variants (default {CORE_VARIANTS})")
    parser.add_argument("--step-limit", type=seconds, metavar="SECONDS", help="caps every step's own time limit")
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (its path is printed)")
    parser.add_argument("--max-out-files", type=out_file_count, default=8, metavar="N",
                        help=f"most files the output folder may hold (at least {len(FIXED_OUT_FILES)}; default 8)")
    parser.add_argument("--target-python", default="3.12", metavar="X.Y",
                        help="the GPU machine's CPython; a dry run checks the wheel folder against it (default 3.12)")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # inside a step's own process: which step
    parser.add_argument("--work", help=argparse.SUPPRESS)  # and the check's scratch folder


def seconds(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds")
    return int(text)


def step_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(kind for kind in text.split(",") if kind)
    known = [s.kind for s in STEPS]
    if not kinds or not set(kinds) <= set(known):
        raise argparse.ArgumentTypeError(f"--steps takes some of {','.join(known)}, not {text!r}")
    return kinds


def out_file_count(text: str) -> int:
    if not text.isdigit() or int(text) < len(FIXED_OUT_FILES):
        raise argparse.ArgumentTypeError(f"the check writes at least {len(FIXED_OUT_FILES)} files, not {text!r}")
    return int(text)


def settings_from(args: argparse.Namespace) -> Settings:
    out = Path(args.out or os.environ.get("OUT") or REPO / "runs" / "gpu-check").resolve()
    return Settings(
        dry_run=args.dry_run, out=out, wheels=Path(args.wheels).resolve(),
        deadline_s=args.deadline if args.deadline is not None else (300 if args.dry_run else 480),
        python=args.python, steps=args.steps, variants=args.variants, step_limit_s=args.step_limit,
        keep_work=args.keep_work, max_out_files=args.max_out_files, target_python=args.target_python)


def run(args: argparse.Namespace) -> int:
    """The check (or, with --step, one of its steps) as the parsed flags ask."""
    if args.step:
        return run_step_inside(args.step, Path(args.work))
    return run_check(settings_from(args))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m bench.gpu_check", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
