"""Launch: a form for one run or a sweep, with presets and the trainable-parameter count shown live.

Plain widgets rather than st.form, so every change re-validates with the engine and updates the count before
anything is submitted. Nothing is enqueued unless every run of the request passes the engine's validation.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, catalog, forms
from app.backend import QueueUnavailable
from app.forms import LaunchRequest, parse_list, preview_rows
from app.ui import PAGES, queue_call
from lamp_engine.aliases import ALIASES, ModelShape
from lamp_engine.config import DEVICES, DTYPES, SELECT_ON, SWITCH, ConfigError, RunConfig
from lamp_engine.methods import METHODS
from lamp_engine.methods import method_fields as all_method_fields
from lamp_engine.trackers import TRACKERS

K = "launch."  # widget key prefix; a method's own settings live under launch.<method>.<field>
FIELDS_PER_ROW = 4  # a method's settings per row of the form: wide enough for "balanced" and "all-linear"
SWEEP_TEXT = {"length": "lengths l", "rank": "ranks r", "pool": "pool sizes p"}
DEFAULTS: dict[str, Any] = {
    "mode": "one run", "model_choice": catalog.DEFAULT_MODEL, "task_choice": "sst2", "method": "lamp", "lr": None,
    "batch_size": 16, "steps": None, "epochs": 1.0, "seeds": "42", "k_shot": None, "k_shot_per_class": False,
    "eval_every": "0", "patience": None, "device": "auto", "warmup_ratio": None, "backbone_dropout": "off",
    "select_on": "heldout", "tune_lr": False,
    "dtype": "auto", "load_4bit": False, "max_eval_examples": None, "weight_decay": 1e-5, "max_source_length": 256,
    "sweep.method": [], "sweep.task": [], "sweep.length": "", "sweep.rank": "", "sweep.pool": "", "name": "",
}


def method_key(method: str, field: str) -> str:
    return f"{K}{method}.{field}"


def init_state() -> None:
    for name, value in DEFAULTS.items():
        st.session_state.setdefault(K + name, value)
    for method, kind in METHODS.items():
        for item in dataclasses.fields(kind):
            st.session_state.setdefault(method_key(method, item.name), item.default)
    st.session_state.setdefault(K + "data_dir", catalog.default_data_dir())


def apply_preset() -> None:
    """Copy a preset's values into the widgets. A method preset also picks the method and the mode (a grid makes
    it a sweep); a training preset (a protocol) leaves the method and the mode as they are."""
    name = st.session_state[K + "preset"]
    if name == "—":
        return
    preset = catalog.preset_named(name)
    method = preset.values.get("method", st.session_state[K + "method"])
    own = METHODS[method].field_names()
    for field, value in preset.values.items():
        st.session_state[method_key(method, field) if field in own else K + field] = str(value) \
            if field == "eval_every" else value
    for owner, settings in preset.method_values.items():
        for field, value in settings.items():
            st.session_state[method_key(owner, field)] = value
    if "method" not in preset.values:
        return
    for field in ("length", "rank", "pool"):
        st.session_state[K + "sweep." + field] = ", ".join(map(str, preset.grid.get(field, [])))
    st.session_state[K + "sweep.method"] = []
    st.session_state[K + "sweep.task"] = []
    st.session_state[K + "mode"] = "sweep" if preset.grid else "one run"
    if preset.grid:
        st.session_state[K + "name"] = name


def choose_model() -> tuple[str, ModelShape | None]:
    """The model field and its shape (for a hub id, its hidden size d if the user gives it; None otherwise)."""
    options = [*ALIASES, catalog.OTHER_MODEL]
    choice = st.selectbox("model", options, key=K + "model_choice",
                          format_func=lambda name: f"{name}: {ALIASES[name].description}" if name in ALIASES else name,
                          help="offline aliases, or any hub id / local folder on machines that have it")
    if choice != catalog.OTHER_MODEL:
        return choice, ALIASES[choice].shape
    model = st.text_input("hub id or local folder", key=K + "model_other", placeholder="google/flan-t5-base")
    d = st.number_input("hidden size d (optional: for the parameter count before loading)", value=None, step=1,
                        key=K + "hidden_size")
    return model.strip(), ModelShape(hidden_size=int(d)) if d else None


def read_upload(upload: Any) -> tuple[str, pd.DataFrame]:
    """Parse an uploaded CSV/JSONL and keep it on this host until Launch stores it (a file picked and never
    launched never reaches the store); returns the path the run's config names meanwhile, and the table. The table
    is kept in the session by the file's content hash, so a rerun (every widget change) does not parse it again."""
    data = upload.getvalue()
    name = upload.name if upload.name.lower().endswith(".csv") else f"{Path(upload.name).stem}.jsonl"
    path = backend.keep_pending_upload(data, name)
    digest = path.parent.name
    cached = st.session_state.get(K + "parsed_upload")
    if cached and cached[0] == digest:
        return str(path), cached[1]
    frame = pd.read_csv(io.BytesIO(data)) if name.endswith(".csv") else pd.read_json(io.BytesIO(data), lines=True)
    st.session_state[K + "parsed_upload"] = (digest, frame)
    return str(path), frame


def custom_task_fields() -> dict[str, Any]:
    """Upload a file and pick its columns; returns the data fields of a custom task ({} until a file is given)."""
    upload = st.file_uploader("training file (CSV or JSONL)", type=["csv", "jsonl", "json"], key=K + "upload")
    if upload is None:
        st.info("Upload a CSV or JSONL file with a text column and a label column.")
        return {}
    if refusal := forms.upload_refusal(upload.name, upload.size):
        st.error(refusal)
        return {}
    try:
        reference, frame = read_upload(upload)
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
    return {"train_file": reference, "text_column": text, "text_pair_column": None if pair == "—" else pair,
            "label_column": label, "verbalizers": verbalizers.strip() or None}


def choose_task() -> tuple[str, dict[str, Any]]:
    task = st.selectbox("task", [*catalog.task_names(), catalog.CUSTOM_TASK], key=K + "task_choice")
    if task == catalog.CUSTOM_TASK:
        return "custom", custom_task_fields()
    return task, {}


def method_fields() -> dict[str, Any]:
    """The method, then its own settings only (another method's fields are not shown, nor sent)."""
    method = st.selectbox("method", list(METHODS), key=K + "method",
                          format_func=lambda name: f"{name}: {METHODS[name].title}")
    items = dataclasses.fields(METHODS[method])
    values: dict[str, Any] = {"method": method}
    for start in range(0, len(items), FIELDS_PER_ROW):  # rows of a few, so that no value is cut short
        row = items[start:start + FIELDS_PER_ROW]
        for item, column in zip(row, st.columns(FIELDS_PER_ROW), strict=False):
            values[item.name] = setting_widget(column, item, method_key(method, item.name))
    return values


def setting_widget(column: Any, item: dataclasses.Field, key: str) -> Any:
    """The widget for one dataclass field, chosen by its type and choices; its help is the field's own."""
    label, help_text = item.name.replace("_", " "), item.metadata.get("help")
    if item.metadata.get("choices"):
        return column.selectbox(label, item.metadata["choices"], key=key, help=help_text)
    if "bool" in str(item.type):
        return column.checkbox(label, key=key, help=help_text)
    if "int" in str(item.type):
        return column.number_input(label, step=1, key=key, help=help_text)
    if "float" in str(item.type):
        return column.number_input(label, step=None, format="%g", key=key, help=help_text)
    return column.text_input(label, key=key, help=help_text)


def train_fields() -> dict[str, Any]:
    c1, c2, c3, c4 = st.columns(4)
    values = {
        "lr": c1.number_input("learning rate (empty: backbone default)", value=None, step=0.001, format="%g",
                              key=K + "lr"),
        "batch_size": c2.number_input("batch size", step=1, key=K + "batch_size"),
        "steps": c3.number_input("steps (empty: use epochs)", value=None, step=1, key=K + "steps"),
        "epochs": c4.number_input("epochs", step=0.5, key=K + "epochs"),
    }
    c1, c2, c3, c4 = st.columns(4)
    values["eval_every"] = c1.text_input("evaluate every (steps, or 'epoch'; 0: at the end)", key=K + "eval_every",
                                         help="each evaluation scores the selection split and keeps the best prompt")
    values["patience"] = c2.number_input("patience (evaluations; empty: none)", value=None, step=1,
                                         key=K + "patience", help="stop once this many evaluations in a row "
                                                                  "brought no better selection metric")
    values["k_shot"] = c3.number_input("k-shot (empty: all)", value=None, step=1, key=K + "k_shot",
                                       help="K training examples in all, drawn at random (the paper's few-shot)")
    values["k_shot_per_class"] = c4.checkbox("K of each class", key=K + "k_shot_per_class")
    c1, c2, c3, c4 = st.columns(4)
    values["max_eval_examples"] = c1.number_input("max eval examples (empty: all)", value=None, step=1,
                                                  key=K + "max_eval_examples")
    values["device"] = c2.selectbox("device", DEVICES, key=K + "device")
    values["dtype"] = c3.selectbox("model dtype", DTYPES, key=K + "dtype",
                                   help="auto: bf16 on CUDA, fp32 on CPU; bf16 is about 2x faster on CPUs with "
                                        "avx512_bf16 or AMX")
    values["load_4bit"] = c4.checkbox("4-bit (NF4, CUDA only)", key=K + "load_4bit")
    return values


def sweep_grid(values: dict[str, Any]) -> dict[str, list[Any]]:
    """The sweep fields that were filled in, parsed; raises ConfigError naming a malformed field."""
    st.markdown("**Sweep over** (empty fields are not swept; seeds always are)")
    c1, c2 = st.columns(2)
    grid: dict[str, list[Any]] = {}
    methods = c1.multiselect("methods", list(METHODS), key=K + "sweep.method")
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
        model, shape = choose_model()
    with c2:
        task, data_fields = choose_task()
    values: dict[str, Any] = {"model": model, "task": task, **method_fields(), **train_fields()}
    c1, c2 = st.columns([1, 3])
    seeds_text = c1.text_input("seeds (comma separated)", key=K + "seeds")
    data_dir = c2.text_input("data folder", key=K + "data_dir", help="folder with the original task files")
    values.update(data_fields, data_dir=data_dir.strip() or None)
    with st.expander("more training options"):
        c1, c2 = st.columns(2)
        values["weight_decay"] = c1.number_input("weight decay", step=1e-5, format="%g", key=K + "weight_decay")
        values["max_source_length"] = c2.number_input("max source length", step=1, key=K + "max_source_length")
        c1, c2, c3 = st.columns(3)
        values["warmup_ratio"] = c1.number_input("warm-up (fraction of the steps; empty: none)", value=None,
                                                 step=0.05, format="%g", key=K + "warmup_ratio")
        values["backbone_dropout"] = c2.selectbox("frozen model's dropout while training", SWITCH,
                                                  key=K + "backbone_dropout", help="evaluation always runs without")
        values["select_on"] = c3.selectbox("select the best evaluation on", SELECT_ON, key=K + "select_on",
                                           help="validation: the reported set, as the paper (the run is marked)")
    grid = sweep_grid(values) if mode == "sweep" else {}
    if "method" in grid:  # the settings shown are the chosen method's: send those the swept methods have
        swept = [METHODS[m] for m in grid["method"]]
        values = {k: v for k, v in values.items()
                  if k not in all_method_fields() or any(k in kind.field_names() for kind in swept)}
    seeds = parse_list("seed", seeds_text)
    values["seed"] = seeds[0]
    if len(seeds) > 1:
        grid["seed"] = seeds
    tune = st.checkbox("tune the learning rate first", key=K + "tune_lr",
                       help="a search over the method family's rates on the first seed, scored on the selection "
                            "split only (the reported set is not read); the runs then train at the best rate, all "
                            "in one sweep")
    return LaunchRequest(values=values, grid=grid, shape=shape, tune_lr=tune)


@st.cache_data(max_entries=64, show_spinner="reading the task's data to count the steps…")
def training_examples(config: dict[str, Any]) -> int | None:
    """How many examples the run trains on (its task read as the run will read it); None if it cannot be read."""
    return forms.training_examples(RunConfig.from_dict(config))


def show_cost(request: LaunchRequest) -> None:
    """Trainable parameters, prompt tokens, optimizer steps and evaluations of every run, before any is submitted."""
    rows = preview_rows(request, lambda config: training_examples(config.to_dict()))
    if len(rows) == 1:
        row = rows[0]
        c1, c2, c3, c4, c5 = st.columns(5)
        params = f"{row['trainable params']:,}" if row["trainable params"] is not None else "after load"
        c1.metric("trainable parameters", params,
                  help="the method's own parameters, by the paper's formulas (lamp_engine/methods.py)")
        c2.metric("prompt tokens fed to the model", f"{row['prompt tokens']:,}")
        c3.metric("hidden size d", f"{request.shape.hidden_size:,}" if request.shape else "after load")
        c4.metric("optimizer steps", format_count(row["steps"]), help=f"{format_count(row['train examples'])} "
                  "training examples")
        c5.metric("evaluations", format_count(row["evaluations"]),
                  help="on the selection split, the last one included")
        return
    st.markdown(f"**{len(rows)} runs**")
    frame = pd.DataFrame(rows)
    for column in ("trainable params", "train examples", "steps", "evaluations"):
        frame[column] = frame[column].astype("Int64")
    st.dataframe(frame, hide_index=True, width="stretch")


def format_count(value: int | None) -> str:
    return "after the data loads" if value is None else f"{value:,}"


@st.cache_data(ttl=10, show_spinner=False)
def offered_trackers() -> list[str]:
    return backend.worker_trackers()


def tracker_choices() -> dict[str, bool]:
    """A checkbox per experiment tracker that a live worker is configured for (LAMP_MLFLOW_TRACKING_URI,
    LAMP_WANDB_PROJECT on its host); none when no worker offers one, or Redis is away (Launch says so)."""
    try:
        offered = offered_trackers()
    except QueueUnavailable:
        return {}
    columns = st.columns(4)
    return {name: columns[index % 4].checkbox(f"mirror to {TRACKERS[name].title}", value=True,
                                              key=f"{K}tracker.{name}", help="the workers send its metrics, "
                                              "params and files there (docs/trackers.md)")
            for index, name in enumerate(offered) if name in TRACKERS}


def launch(request: LaunchRequest, name: str) -> None:
    run_ids = queue_call(lambda: backend.submit(request, name), fallback=[])
    if run_ids:
        st.session_state[K + "last_ids"] = run_ids
        kind = "learning-rate search run" if request.tune_lr else "run"
        st.success(f"Queued {len(run_ids)} {kind}{'s' if len(run_ids) > 1 else ''}: "
                   + ", ".join(f"#{i}" for i in run_ids)
                   + ("; the final runs follow at the best rate when the search ends" if request.tune_lr else ""))


def main() -> None:
    st.title("Launch")
    init_state()
    st.selectbox("preset", ["—", *(p.name for p in catalog.PRESETS)], key=K + "preset", on_change=apply_preset,
                 help="\n".join(f"- **{p.name}**: {p.description}" for p in catalog.PRESETS))
    mode = st.radio("what to launch", ["one run", "sweep"], key=K + "mode", horizontal=True)
    try:
        request = build_request(mode)
        rows_ok = bool(request.configs)
    except ConfigError as exc:
        st.error(str(exc))
        request, rows_ok = None, False
    if rows_ok:
        if request.tune_lr:
            st.info(request.search_plan())
        show_cost(request)
    name = st.text_input("sweep name", key=K + "name") if mode == "sweep" else ""
    trackers = tracker_choices()
    if st.button("Launch", type="primary", disabled=not rows_ok, key=K + "submit"):
        launch(dataclasses.replace(request, trackers=trackers),
               name.strip() or ("learning-rate search" if request.tune_lr else "sweep"))
    if st.session_state.get(K + "last_ids"):
        st.page_link(PAGES["runs"], label="Watch them on the Runs page", icon=":material/list:")


main()
