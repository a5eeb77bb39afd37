"""The GPU check's summary: summary.json and summary.md (written like every bench report, by bench.cli.write), the
closing lines, and the archive of the details.
"""

from __future__ import annotations

import datetime
import tarfile
from pathlib import Path
from typing import Any

from bench.cli import write
from bench.gpu_steps import Settings, read_json, test_cases

FIXED_OUT_FILES = ("summary.md", "summary.json", "check.log", "details.tar.gz")
DETAILS = ("logs", "gpu-tests.xml", "queued-run.json", "queued-run-result.json", "environment.json", "steps.json")

# Issue 16's targets for LAMP p = 4 against PEFT's prompt tuning, and the reference run (H200, minimal LAMP).
TARGETS = [("llama2-7b", "step_vs_peft_pt", 0.80, "step time", "0.78x"),
           ("llama2-7b", "peak_vs_peft_pt", 1.00, "peak memory", "1.00x"),
           ("t5-3b", "peak_vs_peft_pt", 0.88, "peak memory", "0.85x"),
           ("t5-3b", "step_vs_peft_pt", None, "step time", "0.85x")]
LABEL = {"llama2-7b": "Llama-2-7B shape", "t5-3b": "T5-3B shape"}
QUEUED_ROW = ("id", "status", "worker_name", "peak_memory_mb", "step_seconds_median", "train_seconds",
              "trainable_params", "prompt_tokens", "main_metric", "main_metric_value", "error")


def targets(speed: dict[str, Any], dry_run: bool) -> list[dict[str, Any]]:
    """Issue 16's targets, each with what LAMP p = 4 measured against them (where a GPU measured it)."""
    rows = []
    for shape, key, limit, what, reference in TARGETS:
        lamp = ((speed.get(shape) or {}).get("variants") or {}).get("lamp_p4")
        row = {"shape": shape, "measure": what, "target": limit, "reference": reference,
               "measured": lamp.get(key) if lamp else None,
               "step_memory": lamp.get("step_memory_vs_peft_pt") if lamp and what == "peak memory" else None}
        if row["measured"] is None:
            row["status"] = "not measured" + (" (dry run: tiny shapes on the CPU)" if dry_run else "")
        else:
            row["status"] = "no target" if limit is None else ("met" if row["measured"] <= limit else "not met")
        rows.append(row)
    return rows


def summarize(settings: Settings, work: Path, steps: list[dict[str, Any]], elapsed_s: int) -> dict[str, Any]:
    """Everything the check found, for summary.json: the steps, the machine, the tests, the run and the bench."""
    speed = {shape: read_json(settings.out / f"speed-{shape}.json") for shape in settings.shapes}
    tests = test_cases(work / "gpu-tests.xml") if (work / "gpu-tests.xml").exists() else []
    for test in tests:
        test["message"] = (test["message"].splitlines() or [""])[0][:300]
    return {"mode": "dry run (CPU, tiny shapes)" if settings.dry_run else "GPU",
            "finished": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "deadline_s": settings.deadline_s, "elapsed_s": elapsed_s,
            "counts": {kind: sum(s["outcome"] == kind for s in steps) for kind in ("passed", "skipped", "failed")},
            "steps": steps, "environment": read_json(work / "environment.json") or {}, "gpu_tests": tests,
            "queued_run": read_json(work / "queued-run.json"), "speed": speed,
            "targets": targets(speed, settings.dry_run), "wheels": read_json(settings.wheels / "manifest.json")}


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def cell(text: Any) -> str:
    return str(text).replace("|", "/")


def gpu_section(summary: dict[str, Any], settings: Settings) -> list[str]:
    """Section 1.4 of docs/benchmarks.md, between the markers that docs/benchmarks.md keeps."""
    env, stamp = summary["environment"], summary["finished"]
    versions = env.get("packages") or {}

    def version(name: str) -> str:
        return (versions.get(name) or {}).get("version", "-")

    heading = "### 1.4 GPU settings (T5-3B and Llama-2-7B shapes, random init, bf16, batch 16, source 256)"
    lines = ["<!-- gpu-section: begin (docs/benchmarks.md section 1.4) -->", heading, ""]
    if settings.dry_run:
        lines += ["Not measured: this is a dry run (CPU, tiny shapes). The tables below show the layout only.", ""]
    else:
        lines += [f"Measured by `{settings.command}` on {env.get('gpu') or 'no CUDA GPU'}, {stamp}: torch "
                  f"{env.get('torch', '?')}, transformers {version('transformers')}, peft {version('peft')}. "
                  f"`lamp bench speed --device cuda --random-init --shape llama2-7b|t5-3b --variants "
                  f"{settings.variants}` (bf16, batch 16, source 256, l = 100, r = 8, 3 rounds x 2 steps + 1 "
                  "warm-up round). Peak memory includes the weights of both model instances the bench holds (ours "
                  "and PEFT's); step memory is the increase over them.", ""]
    lines += ["| target (issue 16) | LAMP p = 4 vs `peft_pt` | reference run (H200, minimal LAMP) | status |",
              "|---|---|---|---|"]
    for row in summary["targets"]:
        target = "(no target)" if row["target"] is None else f"<= {row['target']:.2f}x"
        measured = ratio(row["measured"]) + (f" ({ratio(row['step_memory'])} step memory)"
                                            if row["step_memory"] is not None else "")
        lines.append(f"| {LABEL[row['shape']]}: {row['measure']} {target} | {measured} | {row['reference']} | "
                     f"{row['status']} |")
    for shape in settings.shapes:
        report = settings.out / f"speed-{shape}.md"
        lines += ["", f"#### {LABEL.get(shape, shape)} (`--shape {shape}`)", ""]
        lines += [report.read_text().rstrip()] if report.exists() else ["not measured (see the steps)"]
    return [*lines, "<!-- gpu-section: end -->", ""]


def summary_markdown(summary: dict[str, Any], settings: Settings) -> str:
    env, counts, steps = summary["environment"], summary["counts"], summary["steps"]
    cuda = f", CUDA {env['torch_cuda']}" if env.get("torch_cuda") else ""
    lines = [f"# GPU check, {summary['finished']}", "",
             f"`{settings.command}` on {env.get('gpu') or 'no CUDA GPU'} (Python {env.get('python', '?')}, torch "
             f"{env.get('torch', '?')}{cuda}): of {len(steps)} steps {counts['passed']} passed, {counts['skipped']} "
             f"skipped, {counts['failed']} failed, in {summary['elapsed_s']} s of the {summary['deadline_s']} s "
             "deadline." + (" Dry run: CPU, tiny shapes; nothing here is a GPU measurement." if settings.dry_run
                            else ""),
             "", "| step | outcome | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {s['step']} | {s['outcome']} | {s['seconds']} | {cell(s['detail'])} |" for s in steps]
    lines += ["", *gpu_section(summary, settings)]
    if tests := summary["gpu_tests"]:
        lines += ["## GPU tests (tests/test_gpu.py)", "", "| test | outcome | seconds | message |",
                  "|---|---|---:|---|"]
        lines += [f"| {t['test']} | {t['outcome']} | {t['seconds']:.1f} | {cell(t['message'])} |" for t in tests]
        lines.append("")
    if queued := summary["queued_run"]:
        lines += ["## Queued run (tiny-t5, LAMP, 20 steps)", "", "| field in the store | value |", "|---|---|"]
        lines += [f"| {key} | {queued.get(key)} |" for key in QUEUED_ROW]
        lines.append("")
    if manifest := summary["wheels"]:
        lines += ["## Wheel folder", "", f"{len(manifest['wheels'])} wheels, {manifest['wheel_bytes'] / 2**20:.1f} MiB"
                  + "".join(f"; left out: {i['requirement']} ({i['reason']})" for i in manifest["left_out"]), ""]
    return "\n".join(lines)


def write_summary(settings: Settings, work: Path, steps: list[dict[str, Any]], elapsed_s: int) -> dict[str, Any]:
    """summary.json and summary.md in the output folder; returns the summary."""
    summary = summarize(settings, work, steps, elapsed_s)
    write(summary, summary_markdown(summary, settings), settings.out / "summary")
    return summary


def print_closing_lines(summary: dict[str, Any], settings: Settings, speed_packed: bool) -> None:
    """Which steps ran, which were skipped and why, and the targets measured: the lines a reader sees last."""
    counts = summary["counts"]
    print()
    print(f"GPU check ({summary['mode']}): {counts['passed']} passed, {counts['skipped']} skipped, "
          f"{counts['failed']} failed in {summary['elapsed_s']} s (deadline {summary['deadline_s']} s)")
    for s in summary["steps"]:
        print(f"  {s['step']:<16} {s['outcome']:<8} {s['seconds']:>4} s  {s['detail']}")
    for row in summary["targets"]:
        if row["measured"] is not None:
            print(f"  target {LABEL[row['shape']]} {row['measure']}: {ratio(row['measured'])} ({row['status']})")
    speed = (f" (with the speed reports: loose, they would make more than {settings.max_out_files} files)"
             if speed_packed else ", speed-*.json/md")
    print(f"results: {settings.out}/summary.md, summary.json, check.log, details.tar.gz{speed}")


def pack_details(work: Path, out: Path, max_files: int) -> bool:
    """The step logs, test report and queued run in one archive; the speed reports too where leaving them loose
    would put more than `max_files` files in the output folder (a device call brings back only so many): returns
    whether it took them."""
    speed = sorted([*out.glob("speed-*.json"), *out.glob("speed-*.md")])
    packed = speed if len(FIXED_OUT_FILES) + len(speed) > max_files else []
    with tarfile.open(out / "details.tar.gz", "w:gz") as archive:
        for name in DETAILS:
            if (work / name).exists():
                archive.add(work / name, arcname=name)
        for path in packed:
            archive.add(path, arcname=path.name)
    for path in packed:
        path.unlink()
    return bool(packed)
