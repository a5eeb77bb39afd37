"""Run page: everything about one run (?id=N), its downloads, and a "try it" box served by a worker.

While the run is queued or running, its status, progress, costs and curves re-draw by themselves every few
seconds: the costs are known as soon as the worker has built the model, and the step time is a live median.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, charts
from app.tables import badge, flatten_config, format_number, run_label
from app.ui import PAGES, describe, live, plain, queue_call
from lamp_common.result import RunResult
from lamp_engine.trackers import TRACKERS
from store.status import ACTIVE, FINISHED, RETRYABLE, WITH_PROMPT, RunStatus

POLL_SECONDS = 1.0
REFRESH_SECONDS = 2.0


def choose_run() -> dict[str, Any] | None:
    """The run named by ?id=, else one picked here (and then written to the URL)."""
    wanted = str(st.query_params.get("id", ""))
    if wanted.isdigit():
        record = backend.load_run(int(wanted))
        if record is not None:
            return record
        st.warning(f"Run #{wanted} is not in the store.")
    records = backend.picker_runs([])
    if not records:
        st.info("No runs yet.")
        return None
    by_id = {r["id"]: r for r in records}
    run_id = st.selectbox("run", list(by_id), format_func=lambda i: describe(by_id[i]), key="run.pick")
    st.query_params["id"] = str(run_id)
    return by_id[run_id]


def header(record: dict[str, Any]) -> None:
    st.title(f"Run #{record['id']}")
    st.markdown(f"**{badge(record['status'])}** · method **{plain(record.get('method'))}** · model "
                f"**{plain(record.get('model'))}** · task **{plain(record.get('task'))}**")
    facts = {"created": record.get("created_at"), "started": record.get("started_at"),
             "finished": record.get("finished_at"), "worker": record.get("worker_name"),
             "job": record.get("job_id"), "sweep": record.get("sweep_id"), "retry of": record.get("parent_id"),
             "resumed from step": record.get("resumed_from_step"), "submitted by": record.get("submitted_by")}
    st.caption(plain(" · ".join(f"{k}: {v:%Y-%m-%d %H:%M:%S} UTC" if hasattr(v, "strftime") else f"{k}: {v}"
                                for k, v in facts.items() if v is not None)))
    for action in backend.run_actions(record["id"]):
        st.caption(plain(action))
    if record["status"] in ACTIVE:
        total = record.get("total_steps")
        st.progress(min(float(record.get("progress") or 0.0), 1.0),
                    text=f"step {record.get('step') or 0}/{total}" if total else "waiting for a worker")
    if record["status"] == RunStatus.FAILED:
        st.error(plain(f"Failed: {record.get('error') or 'no reason recorded'}"))
    elif record.get("error"):
        st.warning(plain(record["error"]))
    if record.get("health"):
        st.warning(plain(record["health"]))


def trackers(record: dict[str, Any]) -> None:
    """Which experiment trackers have the run (a link to it there) and which are behind, saying why."""
    for mirror in backend.tracker_mirrors(record["id"]):
        kind = TRACKERS.get(mirror["tracker"])
        name, url = kind.title if kind else mirror["tracker"], mirror["url"]
        where = f"[open in {name}]({url})" if url and url.startswith(("http://", "https://")) else \
            (f"offline files: `{url}` (`wandb sync` uploads them)" if url else "")
        if mirror["up_to_date"]:
            state = "✓ up to date"
        else:
            behind = f"{mirror['points_behind']:,} points behind" if mirror["points_behind"] else "its end not sent"
            state = f"⏳ {behind}" + (f" ({plain(mirror['error'])})" if mirror["error"] else "")
        st.caption(" · ".join(part for part in (f"{name}: {state}", where) if part))


def results(record: dict[str, Any]) -> None:
    metrics = record.get("metrics") or {}
    if metrics:
        st.subheader("Metrics")
        best = record.get("best_metrics") or {}
        for column, (name, value) in zip(st.columns(len(metrics)), metrics.items(), strict=True):
            main = " (main)" if name == record.get("main_metric") else ""
            column.metric(name + main, f"{value:.2f}", help=f"best during training: {best.get(name, value):.2f}")
        selection(record, best)
    quantities = RunResult.costs()
    st.subheader("Costs")
    if record["status"] in ACTIVE:
        st.caption("Known once a worker has built the model; the step time is the median so far.")
    st.dataframe(pd.DataFrame({"quantity": [label for label, _ in quantities],
                               "value": [format_number(record.get(key)) for _, key in quantities]}), hide_index=True)


def selection(record: dict[str, Any], best: dict[str, float]) -> None:
    """Which evaluation's prompt the metrics are of, and whether patience ended the run early."""
    result = backend.read_run_json(record, "result.json") or {}
    evaluations = len((result.get("history") or {}).get("eval") or [])
    if evaluations > 1 and "step" in best:
        st.caption(f"The test metrics are those of the prompt of step {best['step']}, the best of {evaluations} "
                   "evaluations on the selection split.")
    if result.get("early_stop_step"):
        patience = (result.get("config") or {}).get("train", {}).get("patience")
        st.info(f"Stopped early at step {result['early_stop_step']} of {record.get('total_steps')}: {patience} "
                "evaluations in a row brought no better selection score (--patience).")


def curves(record: dict[str, Any]) -> None:
    keys = backend.metric_keys([record["id"]])
    if not keys:
        return
    st.subheader("Curves")
    label = {record["id"]: run_label(record)}
    for column, key in zip(st.columns(2), [k for k in ("loss", record_eval_key(record, keys)) if k], strict=False):
        frame = charts.curves_frame(backend.load_series([record["id"]], key), label)
        column.altair_chart(charts.curves_chart(frame, key), width="stretch")


def record_eval_key(record: dict[str, Any], keys: list[str]) -> str | None:
    """The evaluation curve of the run's main metric (eval_<name>), else the first evaluation curve."""
    wanted = f"eval_{record.get('main_metric')}"
    return wanted if wanted in keys else next((k for k in keys if k.startswith("eval_")), None)


DOWNLOADS = {  # the files a researcher takes away, by their usual labels; other stored entries follow by name
    "prompt.safetensors": ("prompt (safetensors)", ".safetensors", "application/octet-stream", "prompt"),
    "peft": ("PEFT adapter (zip)", "-peft.zip", "application/zip", "peft"),
    "result.json": ("result.json", "-result.json", "application/json", "result"),
}
NOT_OFFERED = ("dispersion.json", "trainer_state.pt")  # drawn on the Dispersion page; only for resuming


def download_list(record: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(entry, label, file suffix, mime type, widget key) of each file to offer: the usual three, then any other
    file or folder the run stored (an adapter method's head or weights)."""
    entries = {e.name: e for e in backend.run_entries(record)} or {name: None for name in DOWNLOADS}
    offered = [(name, *DOWNLOADS[name]) for name in DOWNLOADS if name in entries]
    for name, entry in entries.items():
        if name not in DOWNLOADS and name not in NOT_OFFERED:
            zipped = entry is not None and entry.is_folder
            offered.append((name, f"{name} (zip)" if zipped else name, f"-{name}" + (".zip" if zipped else ""),
                            "application/zip" if zipped else "application/octet-stream", name))
    return [(name, f"{label} · {human_size(entries[name].size)}" if entries[name] else label, *rest)
            for name, label, *rest in offered]


def human_size(size: float) -> str:
    """The size a download button shows before anything is fetched."""
    for unit in ("bytes", "KB", "MB"):
        if size < 1024:
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} GB"


def downloads(record: dict[str, Any]) -> None:
    """A download button per run file, read from the store (whichever host trained the run); a file that cannot
    be had here (kept on another host's disk, or corrupted) is one line saying so."""
    st.subheader("Downloads")
    reads = [(item, backend.fetch_run_file(record, item[0])) for item in download_list(record)]
    if not any(read.content or read.problem for _, read in reads):
        st.caption("No files yet: they are written when the run ends.")
        return
    stem = f"run{record['id']}-{record.get('method')}-{record.get('task')}"
    columns = st.columns(3)
    for index, ((_, label, suffix, mime, key), read) in enumerate(reads):
        if read.content:
            columns[index % 3].download_button(label, read.content, file_name=f"{stem}{suffix}", mime=mime,
                                               key=f"run.dl.{key}")
    for _, read in reads:
        if read.problem:
            st.warning(read.problem)


def show_prediction(job_id: str) -> None:
    """Poll the worker's answer; the fragment re-runs every second until it is there."""
    answer = queue_call(lambda: backend.prediction(job_id))
    if answer is None:
        st.caption("Waiting for a worker to run the prompt…")
        return
    if answer.get("error"):
        st.error(plain(answer["error"]))
        return
    for item in answer.get("predictions", [answer]):
        st.markdown(f"Prediction: **{plain(item.get('prediction'))}**")
        scores = item.get("scores") or {}
        if scores:
            st.dataframe(pd.DataFrame({"label": list(scores), "score": list(scores.values())}), hide_index=True)


def try_it(record: dict[str, Any]) -> None:
    if record["status"] not in WITH_PROMPT:
        return
    st.subheader("Try it")
    key = f"run.predict.{record['id']}"
    text = st.text_input("a sentence for the trained prompt", key=key + ".text")
    if st.button("Predict", disabled=not text.strip(), key=key + ".go"):
        st.session_state[key] = queue_call(lambda: backend.ask_prediction(record["id"], text.strip()))
    job_id = st.session_state.get(key)
    if job_id:
        live(show_prediction, POLL_SECONDS)(job_id)


def actions(record: dict[str, Any]) -> None:
    """Stop or cancel, retry and delete: for the run's owner or an admin; anyone else is told whose run it is."""
    if not backend.may_manage(record):
        st.caption(plain(f"Only its owner ({record.get('submitted_by') or 'nobody recorded'}) or an admin can "
                         "stop, cancel, retry or delete this run."))
        return
    c1, c2, c3, _ = st.columns([1, 1, 1, 3])
    if record["status"] in ACTIVE and c1.button("Stop" if record["status"] == RunStatus.RUNNING else "Cancel",
                                                key="run.cancel"):
        outcome = queue_call(lambda: backend.cancel(record["id"]))
        if outcome:
            st.info(outcome)
    if record["status"] in RETRYABLE and c2.button("Retry", key="run.retry"):
        new_id = queue_call(lambda: backend.retry(record["id"]))
        if new_id:
            st.success(f"Queued again as run #{new_id}")
    if record["status"] in FINISHED:
        delete(record, c3)


def delete(record: dict[str, Any], column: Any) -> None:
    """Delete, asked twice: its files and curves go for good (who deleted it stays in `lamp status`)."""
    asked = f"run.delete.{record['id']}"
    if column.button("Delete", key="run.delete"):
        st.session_state[asked] = True
    if st.session_state.get(asked):
        st.warning(f"Delete run #{record['id']}: its files and curves go for good.")
        if st.button(f"Yes, delete run #{record['id']}", type="primary", key="run.delete.confirm"):
            st.session_state.pop(asked)
            if queue_call(lambda: backend.delete(record["id"])):
                st.switch_page(PAGES["runs"])


def redraw(run_id: int, *parts: Callable[[dict[str, Any]], None]) -> None:
    """Draw sections of the page from the run's row as it is now (re-read each time the fragment runs)."""
    record = backend.load_run(run_id)
    for part in parts if record else ():
        part(record)


def main() -> None:
    record = choose_run()
    if record is None:
        return
    every = REFRESH_SECONDS if record["status"] in ACTIVE else None
    live(redraw, every)(record["id"], header, trackers)
    actions(record)
    live(redraw, every)(record["id"], results, curves)
    downloads(record)
    try_it(record)
    flat = flatten_config(record.get("config"))
    with st.expander("configuration"):
        st.dataframe(pd.DataFrame({"field": list(flat), "value": [json.dumps(v) for v in flat.values()]}),
                     hide_index=True)
    split_policy = (backend.read_run_json(record, "result.json") or {}).get("split_policy")
    if split_policy:
        with st.expander("data splits"):
            st.json(split_policy)


main()
