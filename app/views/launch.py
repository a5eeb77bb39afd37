"""Launch: a form for one run or a sweep, with presets and the trainable-parameter count shown live.

Plain widgets rather than st.form, so every change re-validates with the engine and updates the count before
anything is submitted. Nothing is enqueued unless every run of the request passes the engine's validation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, catalog
from app.forms import LaunchRequest, parse_list, preview_rows
from app.ui import PAGES, queue_call
from lamp_engine.config import DEVICES, DTYPES, METHODS, Q_INITS, ConfigError

K = "launch."  # widget key prefix
SWEEP_TEXT = {"length": "lengths l", "rank": "ranks r", "pool": "pool sizes p"}
DEFAULTS: dict[str, Any] = {
    "mode": "one run", "model_choice": "tiny-t5", "task_choice": "sst2", "method": "lamp", "length": 100, "rank": 8,
    "pool": 4, "q_init": "balanced", "lr": None, "batch_size": 16, "steps": None, "epochs": 1.0, "seeds": "42",
    "k_shot": None, "device": "auto", "dtype": "auto", "load_4bit": False, "max_eval_examples": None,
    "weight_decay": 1e-5, "max_source_length": 256, "sweep.method": [], "sweep.task": [], "sweep.length": "",
    "sweep.rank": "", "sweep.pool": "", "name": "",
}


def init_state() -> None:
    for name, value in DEFAULTS.items():
        st.session_state.setdefault(K + name, value)
    st.session_state.setdefault(K + "data_dir", catalog.default_data_dir())


def apply_preset() -> None:
    """Copy a preset's values into the widgets (a grid turns the form into a sweep)."""
    name = st.session_state[K + "preset"]
    if name == "—":
        return
    preset = catalog.preset_named(name)
    for field, value in preset.values.items():
        if K + field in st.session_state or field in DEFAULTS:
            st.session_state[K + field] = value
    for field in ("length", "rank", "pool"):
        st.session_state[K + "sweep." + field] = ", ".join(map(str, preset.grid.get(field, [])))
    st.session_state[K + "sweep.method"] = []
    st.session_state[K + "sweep.task"] = []
    st.session_state[K + "mode"] = "sweep" if preset.grid else "one run"
    if preset.grid:
        st.session_state[K + "name"] = name


def choose_model() -> tuple[str, int | None]:
    """The model field and its hidden size d (None for a hub id whose size the user did not give)."""
    options = [*catalog.MODEL_HIDDEN_SIZES, catalog.OTHER_MODEL]
    choice = st.selectbox("model", options, key=K + "model_choice",
                          help="offline aliases, or any hub id / local folder on machines that have it")
    if choice != catalog.OTHER_MODEL:
        return choice, catalog.MODEL_HIDDEN_SIZES[choice]
    model = st.text_input("hub id or local folder", key=K + "model_other", placeholder="google/flan-t5-base")
    d = st.number_input("hidden size d (optional: for the parameter count before loading)", value=None, step=1,
                        key=K + "hidden_size")
    return model.strip(), int(d) if d else None


def uploads_dir() -> Path:
    from store.db import lamp_home

    folder = lamp_home() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_upload(upload: Any) -> tuple[Path, pd.DataFrame]:
    """Keep an uploaded CSV/JSONL under LAMP_HOME/uploads (named by content, so a worker can read it)."""
    data = upload.getvalue()
    suffix = ".csv" if upload.name.lower().endswith(".csv") else ".jsonl"
    path = uploads_dir() / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_json(path, lines=True)
    return path, frame


def custom_task_fields() -> dict[str, Any]:
    """Upload a file and pick its columns; returns the data fields of a custom task ({} until a file is given)."""
    upload = st.file_uploader("training file (CSV or JSONL)", type=["csv", "jsonl", "json"], key=K + "upload")
    if upload is None:
        st.info("Upload a CSV or JSONL file with a text column and a label column.")
        return {}
    try:
        path, frame = read_upload(upload)
    except ValueError as exc:
        st.error(f"train_file: cannot read {upload.name} as {'CSV' if upload.name.endswith('.csv') else 'JSONL'}"
                 f" ({exc}); upload a well-formed file")
        return {}
    columns = list(frame.columns)
    st.caption(f"{len(frame):,} rows, columns: {', '.join(map(str, columns))}")
    text = st.selectbox("text column", columns, key=K + "text_column")
    pair = st.selectbox("second text column (optional)", ["—", *columns], key=K + "text_pair_column")
    label = st.selectbox("label column", columns, index=len(columns) - 1, key=K + "label_column")
    verbalizers = st.text_input("verbalizers (optional, e.g. 0=negative,1=positive)", key=K + "verbalizers")
    return {"train_file": str(path), "text_column": text, "text_pair_column": None if pair == "—" else pair,
            "label_column": label, "verbalizers": verbalizers.strip() or None}


def choose_task() -> tuple[str, dict[str, Any]]:
    task = st.selectbox("task", [*catalog.task_names(), catalog.CUSTOM_TASK], key=K + "task_choice")
    if task == catalog.CUSTOM_TASK:
        return "custom", custom_task_fields()
    return task, {}


def prompt_fields() -> dict[str, Any]:
    c1, c2, c3, c4 = st.columns(4)
    values = {
        "method": c1.selectbox("method", METHODS, key=K + "method"),
        "length": c2.number_input("prompt length l", step=1, key=K + "length"),
        "rank": c3.number_input("rank r", step=1, key=K + "rank"),
        "pool": c4.number_input("pool size p", step=1, key=K + "pool"),
    }
    c1, c2 = st.columns(2)
    values["q_init"] = c1.selectbox("q_init (LAMP)", Q_INITS, key=K + "q_init",
                                    help="balanced: Q = sqrt(S), first prompt = rank-r SVD of P; paper: Q = S")
    return values


def train_fields() -> dict[str, Any]:
    c1, c2, c3, c4 = st.columns(4)
    values = {
        "lr": c1.number_input("learning rate (empty: backbone default)", value=None, step=0.001, format="%g",
                              key=K + "lr"),
        "batch_size": c2.number_input("batch size", step=1, key=K + "batch_size"),
        "steps": c3.number_input("steps (empty: use epochs)", value=None, step=1, key=K + "steps"),
        "epochs": c4.number_input("epochs", step=0.5, key=K + "epochs"),
    }
    c1, c2, c3, c4, c5 = st.columns(5)
    values["k_shot"] = c1.number_input("k-shot (empty: all)", value=None, step=1, key=K + "k_shot")
    values["max_eval_examples"] = c2.number_input("max eval examples (empty: all)", value=None, step=1,
                                                  key=K + "max_eval_examples")
    values["device"] = c3.selectbox("device", DEVICES, key=K + "device")
    values["dtype"] = c4.selectbox("model dtype", DTYPES, key=K + "dtype",
                                   help="auto: bf16 on CUDA, fp32 on CPU; bf16 is about 2x faster on CPUs with "
                                        "avx512_bf16 or AMX")
    values["load_4bit"] = c5.checkbox("4-bit (NF4, CUDA only)", key=K + "load_4bit")
    return values


def sweep_grid(values: dict[str, Any]) -> dict[str, list[Any]]:
    """The sweep fields that were filled in, parsed; raises ConfigError naming a malformed field."""
    st.markdown("**Sweep over** (empty fields are not swept; seeds always are)")
    c1, c2 = st.columns(2)
    grid: dict[str, list[Any]] = {}
    methods = c1.multiselect("methods", METHODS, key=K + "sweep.method")
    tasks = c2.multiselect("tasks", catalog.task_names(), key=K + "sweep.task")
    if methods:
        grid["method"] = methods
    if tasks:
        grid["task"] = tasks
    texts = {field: col.text_input(label, key=K + "sweep." + field, placeholder="e.g. 4, 8, 16")
             for (field, label), col in zip(SWEEP_TEXT.items(), st.columns(3), strict=True)}
    for field, text in texts.items():
        if text.strip():
            grid[field] = parse_list(field, text)
    return grid


def build_request(mode: str) -> LaunchRequest:
    """Read every widget into a LaunchRequest (raises ConfigError for a malformed list field)."""
    c1, c2 = st.columns(2)
    with c1:
        model, hidden_size = choose_model()
    with c2:
        task, data_fields = choose_task()
    values: dict[str, Any] = {"model": model, "task": task, **prompt_fields(), **train_fields()}
    c1, c2 = st.columns([1, 3])
    seeds_text = c1.text_input("seeds (comma separated)", key=K + "seeds")
    data_dir = c2.text_input("data folder", key=K + "data_dir", help="folder with the original task files")
    values.update(data_fields, data_dir=data_dir.strip() or None)
    with st.expander("more training options"):
        c1, c2 = st.columns(2)
        values["weight_decay"] = c1.number_input("weight decay", step=1e-5, format="%g", key=K + "weight_decay")
        values["max_source_length"] = c2.number_input("max source length", step=1, key=K + "max_source_length")
    grid = sweep_grid(values) if mode == "sweep" else {}
    seeds = parse_list("seed", seeds_text)
    values["seed"] = seeds[0]
    if len(seeds) > 1:
        grid["seed"] = seeds
    return LaunchRequest(values=values, grid=grid, hidden_size=hidden_size)


def show_cost(request: LaunchRequest) -> None:
    """Trainable parameters and prompt tokens of every run of the request, before anything is submitted."""
    rows = preview_rows(request)
    if len(rows) == 1:
        row = rows[0]
        c1, c2, c3 = st.columns(3)
        params = f"{row['trainable params']:,}" if row["trainable params"] is not None else "after load"
        c1.metric("trainable parameters", params, help="the prompt's own parameters (DESIGN.md section 2)")
        c2.metric("prompt tokens fed to the model", f"{row['prompt tokens']:,}")
        c3.metric("hidden size d", f"{request.hidden_size:,}" if request.hidden_size else "after load")
        return
    st.markdown(f"**{len(rows)} runs**")
    frame = pd.DataFrame(rows)
    frame["trainable params"] = frame["trainable params"].astype("Int64")
    st.dataframe(frame, hide_index=True, width="stretch")


def launch(request: LaunchRequest, name: str) -> None:
    run_ids = queue_call(lambda: backend.submit(request, name), fallback=[])
    if run_ids:
        st.session_state[K + "last_ids"] = run_ids
        st.success(f"Queued {len(run_ids)} run{'s' if len(run_ids) > 1 else ''}: "
                   + ", ".join(f"#{i}" for i in run_ids))


def main() -> None:
    st.title("Launch")
    init_state()
    st.selectbox("preset", ["—", *(p.name for p in catalog.PRESETS)], key=K + "preset", on_change=apply_preset,
                 help="\n".join(f"- **{p.name}**: {p.description}" for p in catalog.PRESETS))
    mode = st.radio("what to launch", ["one run", "sweep"], key=K + "mode", horizontal=True)
    try:
        request = build_request(mode)
        rows_ok = bool(request.configs())
    except ConfigError as exc:
        st.error(str(exc))
        request, rows_ok = None, False
    if rows_ok:
        show_cost(request)
    name = st.text_input("sweep name", key=K + "name") if mode == "sweep" else ""
    if st.button("Launch", type="primary", disabled=not rows_ok, key=K + "submit"):
        launch(request, name.strip() or "sweep")
    if st.session_state.get(K + "last_ids"):
        st.page_link(PAGES["runs"], label="Watch them on the Runs page", icon=":material/list:")


main()
