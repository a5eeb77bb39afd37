"""Run page: everything about one run (?id=N), its downloads, and a "try it" box served by a worker."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, charts, files
from app.tables import ACTIVE, RESOURCES, badge, flatten_config, format_number, run_label
from app.ui import describe, queue_call

POLL_SECONDS = 1.0


def choose_run() -> dict[str, Any] | None:
    """The run named by ?id=, else one picked here (and then written to the URL)."""
    wanted = str(st.query_params.get("id", ""))
    if wanted.isdigit():
        record = backend.load_run(int(wanted))
        if record is not None:
            return record
        st.warning(f"Run #{wanted} is not in the store.")
    records = backend.load_runs()
    if not records:
        st.info("No runs yet.")
        return None
    by_id = {r["id"]: r for r in records}
    run_id = st.selectbox("run", list(by_id), format_func=lambda i: describe(by_id[i]), key="run.pick")
    st.query_params["id"] = str(run_id)
    return by_id[run_id]


def header(record: dict[str, Any]) -> None:
    st.title(f"Run #{record['id']}")
    st.markdown(f"**{badge(record['status'])}** · method **{record.get('method')}** · model "
                f"**{record.get('model')}** · task **{record.get('task')}**")
    facts = {"created": record.get("created_at"), "started": record.get("started_at"),
             "finished": record.get("finished_at"), "worker": record.get("worker_name"),
             "job": record.get("job_id"), "sweep": record.get("sweep_id"), "retry of": record.get("parent_id")}
    st.caption(" · ".join(f"{k}: {v:%Y-%m-%d %H:%M:%S} UTC" if hasattr(v, "strftime") else f"{k}: {v}"
                          for k, v in facts.items() if v is not None))
    if record["status"] in ACTIVE:
        total = record.get("total_steps")
        st.progress(min(float(record.get("progress") or 0.0), 1.0),
                    text=f"step {record.get('step') or 0}/{total}" if total else "waiting for a worker")
    if record["status"] == "failed":
        st.error(f"Failed: {record.get('error') or 'no reason recorded'}")
    elif record.get("error"):
        st.warning(record["error"])


def results(record: dict[str, Any]) -> None:
    metrics = record.get("metrics") or {}
    if metrics:
        st.subheader("Metrics")
        best = record.get("best_metrics") or {}
        for column, (name, value) in zip(st.columns(len(metrics)), metrics.items(), strict=True):
            main = " (main)" if name == record.get("main_metric") else ""
            column.metric(name + main, f"{value:.2f}", help=f"best during training: {best.get(name, value):.2f}")
    quantities = [*RESOURCES, ("prompt params", "prompt_params"), ("head params", "head_params"),
                  ("hidden size d", "hidden_size")]
    st.subheader("Costs")
    st.dataframe(pd.DataFrame({"quantity": [label for label, _ in quantities],
                               "value": [format_number(record.get(key)) for _, key in quantities]}), hide_index=True)


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


def downloads(record: dict[str, Any]) -> None:
    st.subheader("Downloads")
    prompt, peft, result = (backend.run_file(record, n) for n in ("prompt.safetensors", "peft", "result.json"))
    if not any((prompt, peft, result)):
        st.caption("No files yet: they are written when the run ends.")
        return
    c1, c2, c3 = st.columns(3)
    stem = f"run{record['id']}-{record.get('method')}-{record.get('task')}"
    if prompt:
        c1.download_button("prompt (safetensors)", prompt.read_bytes(), file_name=f"{stem}.safetensors",
                           mime="application/octet-stream", key="run.dl.prompt")
    if peft and peft.is_dir():
        c2.download_button("PEFT adapter (zip)", files.zip_folder(peft), file_name=f"{stem}-peft.zip",
                           mime="application/zip", key="run.dl.peft")
    if result:
        c3.download_button("result.json", result.read_bytes(), file_name=f"{stem}-result.json",
                           mime="application/json", key="run.dl.result")


def show_prediction(job_id: str) -> None:
    """Poll the worker's answer; the fragment re-runs every second until it is there."""
    answer = queue_call(lambda: backend.prediction(job_id))
    if answer is None:
        st.caption("Waiting for a worker to run the prompt…")
        return
    if answer.get("error"):
        st.error(answer["error"])
        return
    for item in answer.get("predictions", [answer]):
        st.markdown(f"Prediction: **{item.get('prediction')}**")
        scores = item.get("scores") or {}
        if scores:
            st.dataframe(pd.DataFrame({"label": list(scores), "score": list(scores.values())}), hide_index=True)


def try_it(record: dict[str, Any]) -> None:
    if record["status"] != "succeeded":
        return
    st.subheader("Try it")
    key = f"run.predict.{record['id']}"
    text = st.text_input("a sentence for the trained prompt", key=key + ".text")
    if st.button("Predict", disabled=not text.strip(), key=key + ".go"):
        st.session_state[key] = queue_call(lambda: backend.ask_prediction(record["id"], text.strip()))
    job_id = st.session_state.get(key)
    if job_id:
        st.fragment(run_every=POLL_SECONDS)(show_prediction)(job_id)


def actions(record: dict[str, Any]) -> None:
    c1, c2, _ = st.columns([1, 1, 4])
    if record["status"] in ACTIVE and c1.button("Stop" if record["status"] == "running" else "Cancel",
                                                key="run.cancel"):
        outcome = queue_call(lambda: backend.cancel(record["id"]))
        if outcome:
            st.info(outcome)
    if record["status"] in ("failed", "cancelled") and c2.button("Retry", key="run.retry"):
        new_id = queue_call(lambda: backend.retry(record["id"]))
        if new_id:
            st.success(f"Queued again as run #{new_id}")


def main() -> None:
    record = choose_run()
    if record is None:
        return
    header(record)
    actions(record)
    results(record)
    curves(record)
    downloads(record)
    try_it(record)
    flat = flatten_config(record.get("config"))
    with st.expander("configuration"):
        st.dataframe(pd.DataFrame({"field": list(flat), "value": [json.dumps(v) for v in flat.values()]}),
                     hide_index=True)
    result_path = backend.run_file(record, "result.json")
    split_policy = (files.read_json(result_path) or {}).get("split_policy") if result_path else None
    if split_policy:
        with st.expander("data splits"):
            st.json(split_policy)


main()
