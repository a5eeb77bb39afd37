"""The paper's Figure 6: the trained prompt tokens of a PT run ("before", blue) and of a LAMP run ("after", red)
on the same model and task, projected together (one t-SNE fit, the paper's Figure 1 projection; PCA a choice).

The Dispersion view draws it, and `lamp figure6 --pt ID --lamp ID --output fig.png` writes it to a PNG or SVG
for a paper (Altair's save, through vl-convert). A run is a store id or a run folder (`lamp train --output`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load as load_tensors

from app import projection
from lamp_common.cli import OneLineParser
from lamp_engine.errors import LampError
from store.status import RunStatus

PT_LABEL, LAMP_LABEL = "before: PT", "after: LAMP"
COLOURS = {PT_LABEL: "#1f77b4", LAMP_LABEL: "#d62728"}  # the paper's blue and red
TOKEN_SETS = {"prompt": "the pooled prompt P' (what the model reads)", "unpooled": "the unpooled C (l tokens)"}
FORMATS = (".png", ".svg")


@dataclass(frozen=True)
class Side:
    """One run of the figure: its record (method, model, task, config) and its trained tokens."""

    record: dict[str, Any]
    matrices: dict[str, np.ndarray]  # tokens.safetensors: before./after. x prompt/unpooled

    def trained(self, tokens: str) -> tuple[np.ndarray, str]:
        """The tokens after training (`tokens`, or the prompt where the run has no such matrix: PT has no C), and
        which were taken."""
        name = tokens if f"after.{tokens}" in self.matrices else "prompt"
        return self.matrices[f"after.{name}"], name

    @property
    def name(self) -> str:
        run = self.record["id"]
        return f"run #{run}" if isinstance(run, int) else f"run {run}"


def task_key(record: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two runs comparable: the model and the task (and, for the custom task, its training file)."""
    data = (record.get("config") or {}).get("data") or {}
    return record.get("model"), record.get("task"), data.get("train_file")


def newest_pair(records: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(PT id, LAMP id): the newest finished PT and LAMP runs of one model and task; of several such model and
    task pairs, the one with the newest run. Records come newest first."""
    newest: dict[tuple[Any, ...], dict[str, int]] = {}
    for record in records:
        if record.get("method") in ("pt", "lamp") and record["status"] == RunStatus.SUCCEEDED:
            newest.setdefault(task_key(record), {}).setdefault(record["method"], record["id"])
    pairs = [(ids["pt"], ids["lamp"]) for ids in newest.values() if len(ids) == 2]
    return max(pairs, key=max) if pairs else None


def partners(records: list[dict[str, Any]], pt: dict[str, Any]) -> list[dict[str, Any]]:
    """The finished LAMP runs on the PT run's model and task."""
    return [r for r in records if r.get("method") == "lamp" and r["status"] == RunStatus.SUCCEEDED
            and task_key(r) == task_key(pt)]


def points(pt: Side, lamp: Side, tokens: str, method: str) -> pd.DataFrame:
    """The two runs' trained tokens in one projection (a long frame: run label, token, x, y)."""
    sets = {(PT_LABEL, "PT", "after"): pt.trained(tokens)[0], (LAMP_LABEL, "LAMP", "after"): lamp.trained(tokens)[0]}
    return projection.project_jointly(sets, method)


def caption(pt: Side, lamp: Side, tokens: str, method: str) -> str:
    """One line saying what is plotted."""
    pt_rows, (lamp_rows, taken) = pt.trained(tokens)[0], lamp.trained(tokens)
    name = {"pca": "PCA", "tsne": "t-SNE"}[method]
    return (f"{pt.record.get('model')} / {pt.record.get('task')}, after training: PT {pt.name}'s {len(pt_rows)} "
            f"prompt tokens (blue, before) and LAMP {lamp.name}'s {len(lamp_rows)} tokens of {TOKEN_SETS[taken]} "
            f"(red, after), one {name} fit over both.")


def check_pair(pt: Side, lamp: Side) -> None:
    """A PT run and a LAMP run of one model and task, or a LampError saying which is not."""
    for side, method in ((pt, "pt"), (lamp, "lamp")):
        if side.record.get("method") != method:
            raise LampError(f"{side.name} is a {side.record.get('method')} run; --{method} needs a {method} run")
    if task_key(pt.record) != task_key(lamp.record):
        raise LampError(f"{pt.name} ({' / '.join(map(str, task_key(pt.record)[:2]))}) and {lamp.name} "
                        f"({' / '.join(map(str, task_key(lamp.record)[:2]))}) differ in model or task; Figure 6 "
                        "compares one model on one task")


def side_from_folder(folder: Path) -> Side:
    """A run folder written by `lamp train` (result.json and tokens.safetensors)."""
    try:
        result = json.loads((folder / "result.json").read_text())
        matrices = load_tensors((folder / "tokens.safetensors").read_bytes())
    except FileNotFoundError as exc:
        raise LampError(f"{folder}: no {Path(exc.filename).name}; give a run folder of a soft-prompt run") from None
    record = {key: result.get(key) for key in ("method", "model", "task", "config")}
    return Side({**record, "id": folder.name, "status": RunStatus.SUCCEEDED}, matrices)


def side_from_store(run_id: int) -> Side:
    """A run of the store, by id."""
    from app import backend

    record = backend.load_run(run_id)
    if record is None:
        raise LampError(f"run #{run_id} is not in the store")
    data = backend.read_run_bytes(record, "tokens.safetensors")
    if data is None:
        raise LampError(f"run #{run_id} kept no token matrices (not a finished soft-prompt run)")
    return Side(record, load_tensors(data))


def load_side(ref: str) -> Side:
    """A run given as a store id or a run folder."""
    if ref.isdigit() and not Path(ref).is_dir():
        return side_from_store(int(ref))
    if Path(ref).is_dir():
        return side_from_folder(Path(ref))
    raise LampError(f"{ref!r} is neither a run id nor a run folder")


def write(pt: Side, lamp: Side, tokens: str, method: str, output: Path) -> None:
    """The figure as the view draws it, to PNG (twice the screen's resolution) or SVG, with its caption."""
    from app.charts import figure6_chart

    if output.suffix.lower() not in FORMATS:
        raise LampError(f"output: {output.name} should end in {' or '.join(FORMATS)}")
    chart = figure6_chart(points(pt, lamp, tokens, method), method, COLOURS).properties(
        width=520, height=420, title={"text": "Figure 6: PT (before) vs LAMP (after)",
                                      "subtitle": caption(pt, lamp, tokens, method)})
    output.parent.mkdir(parents=True, exist_ok=True)
    chart.save(str(output), **({"scale_factor": 2.0} if output.suffix.lower() == ".png" else {}))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp figure6", description="Write the paper's Figure 6 (a PT run's vs a LAMP "
                           "run's trained prompt tokens, one projection) to a PNG or SVG.")
    parser.add_argument("--pt", required=True, help="the PT run: a store id or a run folder")
    parser.add_argument("--lamp", required=True, help="the LAMP run on the same model and task: id or folder")
    parser.add_argument("--output", default="figure6.png", help="a .png or .svg file (default: figure6.png)")
    parser.add_argument("--projection", choices=projection.PROJECTIONS, default="tsne",
                        help="tsne (the paper's Figure 1 projection, the default) or pca (keeps distances' scale)")
    parser.add_argument("--tokens", choices=list(TOKEN_SETS), default="prompt",
                        help="LAMP's pooled prompt P' (prompt, the default) or its unpooled C (unpooled)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    try:
        pt, lamp = load_side(args.pt), load_side(args.lamp)
        check_pair(pt, lamp)
        write(pt, lamp, args.tokens, args.projection, Path(args.output))
    except (LampError, ValueError) as exc:  # ValueError: runs of different hidden sizes
        print(f"lamp figure6: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {caption(pt, lamp, args.tokens, args.projection)}")
    return 0
