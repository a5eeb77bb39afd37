"""Tables the views show, built from plain run records (dicts of a Run row's columns) without Streamlit.

Pure functions, so tests can check the numbers a researcher reads: ratios to a reference run, the differing
config fields, and the paper's Table 1 layout (methods x tasks, mean ± std over seeds).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from typing import Any

import pandas as pd

from lamp_common.result import SELECTION_SPLITS, RunResult, selected_on
from lamp_engine.tuning import LrChoice
from store.status import RunStatus

# Symbols from ordinary text fonts (not emoji), so the badges show in any browser, Debian's Chromium included.
STATUS_BADGES = {
    RunStatus.QUEUED: "◌ queued",
    RunStatus.RUNNING: "▶ running",
    RunStatus.SUCCEEDED: "✔ succeeded",
    RunStatus.FAILED: "✖ failed",
    RunStatus.CANCELLED: "■ cancelled",
}

# (label, record key) of the cost figures compared between runs, as the result defines them.
RESOURCES: tuple[tuple[str, str], ...] = RunResult.costs(compared_only=True)


def badge(status: str) -> str:
    return STATUS_BADGES.get(status, status)


def run_label(record: dict[str, Any]) -> str:
    """Short, unique name of a run for legends and column headers."""
    return f"#{record['id']} {record.get('method') or '?'} · {record.get('task') or '?'}"


def selection_badge(record: dict[str, Any]) -> str:
    """Which split picked the run's best evaluation; '⚑ reported set' marks a run selected as the paper selects."""
    return SELECTION_SPLITS.get(selected_on(record.get("config")), "?")


def learning_rate(record: dict[str, Any]) -> str:
    """The run's rate, and where a search chose it, how: "lr 1e-3, tuned over 4" for a final run, "lr 3e-4,
    search point (selection 81.2)" for a point of the search; "default" where the family's default applies."""
    tuning = record.get("lr_tuning") or {}
    if tuning.get("role") == "final":
        return LrChoice.from_dict(tuning).label()
    lr = ((record.get("config") or {}).get("train") or {}).get("lr")
    if tuning.get("role") == "search":
        score = (record.get("best_metrics") or {}).get(record.get("main_metric") or "")
        return f"lr {lr:g}, search point" + (f" (selection {score:.1f})" if score is not None else "")
    return f"lr {lr:g}" if lr is not None else "default"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def runs_frame(records: list[dict[str, Any]], positions: dict[int, int] | None = None) -> pd.DataFrame:
    """The Runs table: one row per run, newest first as given."""
    positions = positions or {}
    rows = [{
        "id": r["id"],
        "status": badge(r["status"]),
        "method": r.get("method"),
        "model": r.get("model"),
        "task": r.get("task"),
        "metric": r.get("main_metric"),
        "value": _round(r.get("main_metric_value")),
        "selected on": selection_badge(r),
        "learning rate": learning_rate(r),
        "sweep": r.get("sweep_id"),
        "trainable params": r.get("trainable_params"),
        "prompt tokens": r.get("prompt_tokens"),
        "peak memory (MB)": _round(r.get("peak_memory_mb"), 1),
        "train time (s)": _round(r.get("train_seconds"), 1),
        "progress": float(r.get("progress") or 0.0),
        "queue": positions.get(r["id"]),
        "note": r.get("health"),
    } for r in records]
    return pd.DataFrame(rows, columns=["id", "status", "method", "model", "task", "metric", "value", "selected on",
                                       "learning rate", "sweep", "trainable params", "prompt tokens",
                                       "peak memory (MB)", "train time (s)",
                                       "progress", "queue", "note"])


def flatten_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Nested RunConfig dict -> flat field names (model, task, method, rank, lr, ...)."""
    flat: dict[str, Any] = {}
    for key, value in (config or {}).items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def config_table(records: list[dict[str, Any]], differences_only: bool = False) -> pd.DataFrame:
    """Config fields as rows, runs as columns; optionally only the fields whose values differ."""
    flats = [flatten_config(r.get("config")) for r in records]
    fields = list(dict.fromkeys(key for flat in flats for key in flat))
    if differences_only:
        fields = [f for f in fields if len({json.dumps(flat.get(f)) for flat in flats}) > 1]
    data = {run_label(r): ["—" if flat.get(f) is None else str(flat.get(f)) for f in fields]
            for r, flat in zip(records, flats, strict=True)}
    return pd.DataFrame(data, index=pd.Index(fields, name="field"))


def format_number(value: float | None) -> str:
    """Whole numbers with thousands separators, others with two decimals; '—' for a missing value."""
    if value is None:
        return "—"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def relative_change(value: float | None, reference: float | None) -> float | None:
    """(value / reference - 1) in percent; None where either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return (value / reference - 1.0) * 100.0


def _metric_cell(value: float | None, reference: float | None, is_reference: bool) -> str:
    if value is None:
        return "—"
    if is_reference or reference is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({value - reference:+.2f})"


def _resource_cell(value: float | None, reference: float | None, is_reference: bool) -> str:
    change = relative_change(value, reference)
    if value is None or is_reference or change is None:
        return format_number(value)
    return f"{format_number(value)} ({change:+.1f}%)"


def compare_table(records: list[dict[str, Any]], reference_id: int) -> pd.DataFrame:
    """Metrics and costs side by side. Metrics show the difference in points to the reference run;
    parameters, tokens, memory and time show the relative change (so LAMP vs PT reads as -90% params)."""
    reference = next(r for r in records if r["id"] == reference_id)
    metric_names = list(dict.fromkeys(k for r in records for k in (r.get("metrics") or {})))
    rows: dict[str, list[str]] = {}
    for name in metric_names:
        ref_value = (reference.get("metrics") or {}).get(name)
        rows[name] = [_metric_cell((r.get("metrics") or {}).get(name), ref_value, r is reference) for r in records]
    rows["selected on"] = [selection_badge(r) for r in records]
    rows["learning rate"] = [learning_rate(r) for r in records]
    for label, key in RESOURCES:
        rows[label] = [_resource_cell(r.get(key), reference.get(key), r is reference) for r in records]
    columns = [run_label(r) + (" (reference)" if r is reference else "") for r in records]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("quantity")


def ratio_frame(records: list[dict[str, Any]], reference_id: int) -> pd.DataFrame:
    """Long table (run, quantity, change %) of the resource figures, for the ratio chart."""
    reference = next(r for r in records if r["id"] == reference_id)
    rows = []
    for r in records:
        for label, key in RESOURCES:
            change = relative_change(r.get(key), reference.get(key))
            if change is not None:
                rows.append({"run": run_label(r), "quantity": label, "change %": round(change, 2)})
    return pd.DataFrame(rows, columns=["run", "quantity", "change %"])


def _group_key(flat: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in flat.items() if k != "seed"}, sort_keys=True, default=str)


def seed_groups(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs grouped by their config without the seed (finished runs with a main metric only)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("main_metric_value") is not None:
            groups[_group_key(flatten_config(r.get("config")))].append(r)
    return groups


def _row_label(flat: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """The method, and the fields in which its group differs from other groups of the same method and task set
    (a field one method has and another lacks is no difference: PT has no rank)."""
    same_method = [o for o in others if o.get("method") == flat.get("method")]
    fields = sorted({k for o in same_method for k in o} - {"seed", "task", "method"})
    varying = [f for f in fields if len({json.dumps(o.get(f), default=str) for o in same_method}) > 1]
    extra = ", ".join(f"{k}={flat.get(k)}" for k in varying)
    return f"{flat.get('method')} ({extra})" if extra else str(flat.get("method"))


def seed_summary(records: list[dict[str, Any]]) -> pd.DataFrame | None:
    """The paper's Table 1 layout: methods as rows, tasks as columns, 'mean ± std (n)' of the main metric over
    runs that differ only by seed. None when no two runs differ only by seed."""
    groups = seed_groups(records)
    if not any(len(g) > 1 for g in groups.values()):
        return None
    flats = {key: flatten_config(g[0].get("config")) for key, g in groups.items()}
    cells: dict[str, dict[str, str]] = defaultdict(dict)
    for key, group in groups.items():
        values = [float(r["main_metric_value"]) for r in group]
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        metric = group[0].get("main_metric") or "score"
        text = f"{statistics.fmean(values):.2f} ± {std:.2f} (n={len(values)})" if len(values) > 1 \
            else f"{values[0]:.2f} (n=1)"
        cells[_row_label(flats[key], list(flats.values()))][f"{flats[key].get('task')} ({metric})"] = text
    frame = pd.DataFrame.from_dict(cells, orient="index").sort_index().rename_axis("method")
    return frame[sorted(frame.columns)].fillna("—")


def dispersion_figures(runs: list[tuple[dict[str, Any], dict[str, Any]]], tokens: str = "prompt") -> pd.DataFrame:
    """Per run, in the model's own space: mean pairwise distance and covariance trace of its tokens (`prompt`, what
    the model reads, or LAMP's `unpooled` C where the run kept it) before and after training, and their change."""
    rows = []
    for record, dispersion in runs:
        figure = dispersion.get(tokens) or dispersion.get("prompt") or dispersion.get("figure") or {}
        before, after = figure.get("before") or {}, figure.get("after") or {}
        row: dict[str, Any] = {"run": run_label(record), "method": str(record.get("method")).upper()}
        for key, label in (("mean_pairwise_distance", "mean pairwise distance"),
                           ("covariance_trace", "covariance trace")):
            row[f"{label} before"] = _round(before.get(key), 4)
            row[f"{label} after"] = _round(after.get(key), 4)
            change = relative_change(after.get(key), before.get(key))
            row[f"{label} change %"] = _round(change, 1)
        rows.append(row)
    return pd.DataFrame(rows)
