"""Dashboard views under Streamlit's AppTest, on a real SQLite store holding runs of every status and real Redis.

Each test asserts on what the page shows (badges, parameter counts, ratios, errors, download bytes) and, for
the actions, on what reached the store and the RQ queue.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.ipc
import pytest
from redis import Redis
from safetensors.numpy import save_file
from streamlit.testing.v1 import AppTest

from app.ui import plain
from store.db import dispose, session_scope
from store.files import fetch_upload
from store.models import MetricPoint, Run

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 30
T0 = datetime(2025, 11, 1, 12, 0, tzinfo=UTC)


def config(method: str, task: str, seed: int = 1, **prompt) -> dict:
    return {"model": "tiny-t5", "task": task,
            "method": {"method": method, "length": 100, **({"rank": 8, "pool": 1} if method == "lamp" else {}),
                       **prompt},
            "train": {"seed": seed, "steps": 10, "batch_size": 2}, "data": {"k_shot": None}}


def dispersion(spread: float) -> dict:
    return {"prompt": {"before": {"mean_pairwise_distance": 1.0, "covariance_trace": 2.0},
                       "after": {"mean_pairwise_distance": spread, "covariance_trace": 2.0 * spread}}}


def write_run_files(home: Path, run: Run, spread: float) -> None:
    folder = home / "runs" / str(run.id)
    (folder / "peft").mkdir(parents=True)
    (folder / "peft" / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    save_file({"prompt": np.full((4, 8), run.id, dtype=np.float32)}, str(folder / "prompt.safetensors"))
    (folder / "result.json").write_text(json.dumps({"method": run.method, "metrics": run.metrics,
                                                    "split_policy": {"train": "train.txt", "test": "dev.txt"}}))
    (folder / "dispersion.json").write_text(json.dumps(dispersion(spread)))
    before = np.random.default_rng(run.id).normal(size=(10, 8)).astype(np.float32)
    save_file({"before.prompt": before, "after.prompt": before * spread}, str(folder / "tokens.safetensors"))
    run.artifact_dir = f"runs/{run.id}"


SUCCEEDED = dict(status="succeeded", progress=1.0, step=10, total_steps=10, prompt_tokens=100, hidden_size=64,
                 peak_memory_mb=500.0, step_seconds_median=0.5, main_metric="accuracy")


def seed_store(home: Path) -> dict[str, int]:
    """Seven runs: three succeeded (PT, and LAMP with two seeds), running, queued, failed, cancelled."""
    rows = {
        "pt": Run(config=config("pt", "sst2"), method="pt", model="tiny-t5", task="sst2", **SUCCEEDED,
                  trainable_params=6400, train_seconds=100.0, metrics={"accuracy": 80.0},
                  main_metric_value=80.0),
        "lamp1": Run(config=config("lamp", "sst2"), method="lamp", model="tiny-t5", task="sst2", **SUCCEEDED,
                     trainable_params=1320, train_seconds=80.0, metrics={"accuracy": 82.0}, main_metric_value=82.0),
        "lamp2": Run(config=config("lamp", "sst2", seed=2), method="lamp", model="tiny-t5", task="sst2",
                     **SUCCEEDED, trainable_params=1320, train_seconds=80.0, metrics={"accuracy": 84.0},
                     main_metric_value=84.0),
        "running": Run(config=config("lamp", "cb"), method="lamp", model="tiny-t5", task="cb", status="running",
                       progress=0.5, step=5, total_steps=10, worker_name="w1"),
        "queued": Run(config=config("pt", "cb"), method="pt", model="tiny-t5", task="cb", status="queued"),
        "failed": Run(config=config("lamp", "rte"), method="lamp", model="tiny-t5", task="rte", status="failed",
                      error="TrainingDiverged: the loss became NaN at step 3; lower the learning rate"),
        "cancelled": Run(config=config("pt", "sst2", seed=3), method="pt", model="tiny-t5", task="sst2",
                         status="cancelled"),
    }
    with session_scope() as session:
        for offset, run in enumerate(rows.values()):
            run.created_at = T0 + timedelta(minutes=offset)
            session.add(run)
        session.flush()
        for name, spread in (("pt", 0.2), ("lamp1", 1.5), ("lamp2", 1.4)):
            write_run_files(home, rows[name], spread)
        for name in ("pt", "lamp1", "lamp2", "running"):
            run = rows[name]
            session.add_all(MetricPoint(run_id=run.id, step=s, key="loss", value=1.0 / s) for s in range(1, 6))
            session.add(MetricPoint(run_id=run.id, step=5, key="eval_accuracy", value=run.main_metric_value or 0))
        return {name: run.id for name, run in rows.items()}


@pytest.fixture(autouse=True)
def loopback_dashboard():
    """The dashboard under test is bound to loopback, as `lamp up` binds it by default: it asks for no login."""
    from streamlit import config

    config.set_option("server.address", "127.0.0.1")
    yield
    config.set_option("server.address", None)


@pytest.fixture()
def redis_db(redis_url) -> Redis:
    """A client of this session's Redis database (REDIS_URL), which the redis_url fixture flushes."""
    connection = Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture()
def store(tmp_path, monkeypatch, redis_db) -> dict[str, int]:
    """A fresh LAMP_HOME and SQLite store filled by seed_store; Redis on this session's test database."""
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'lamp.db'}"
    monkeypatch.setenv("LAMP_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", url)
    ids = seed_store(home)
    yield ids
    dispose(url)


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    at.query_params.update(query)
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, title, error, warning and info text on the page, joined."""
    parts = [e.value for kind in ("markdown", "caption", "title", "subheader", "error", "warning", "info",
                                  "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def queue_length(redis: Redis, name: str = "lamp") -> int:
    return redis.llen(f"rq:queue:{name}")


def stored_runs() -> list[Run]:
    with session_scope() as session:
        return list(session.query(Run).order_by(Run.id))


# --- Runs --------------------------------------------------------------------------------------------------


def test_runs_page_lists_every_status_with_results_and_queue_position(store, redis_db):
    from lamp_engine.config import RunConfig
    from worker.queue import submit_run

    waiting = submit_run(RunConfig.from_flat({"model": "tiny-t5", "task": "cb", "method": "pt", "steps": 2}))
    at = open_page("runs")
    table = at.dataframe[0].value.set_index("id")
    assert len(table) == 8
    assert table.loc[store["lamp2"], "status"] == "✔ succeeded"
    assert table.loc[store["failed"], "status"] == "✖ failed"
    assert table.loc[store["cancelled"], "status"] == "■ cancelled"
    assert table.loc[store["running"], "status"] == "▶ running"
    assert table.loc[store["lamp2"], "value"] == 84.0
    assert table.loc[store["pt"], "trainable params"] == 6400
    assert table.loc[store["lamp1"], "train time (s)"] == 80.0
    assert table.loc[waiting, "queue"] == 1
    counts = {m.label: m.value for m in at.metric}
    assert counts["✔ succeeded"] == "3" and counts["◌ queued"] == "2" and counts["▶ running"] == "1"
    progress = [p.proto.text for p in at.get("progress")]
    assert f"#{store['running']} lamp · cb · ▶ running · step 5/10" in progress
    assert "No worker is up" in texts(at)


def test_runs_page_shows_failure_and_retry_enqueues_one_job(store, redis_db):
    at = open_page("runs")
    at.selectbox(key="runs.selected").set_value(store["failed"]).run()
    assert "the loss became NaN at step 3" in at.error[0].value
    at.button(key="runs.retry").click().run()
    new = stored_runs()[-1]
    assert new.parent_id == store["failed"] and new.status == "queued"
    assert f"queued again as run #{new.id}" in texts(at)
    assert queue_length(redis_db) == 1


def test_runs_page_cancels_a_queued_run(store, redis_db):
    at = open_page("runs")
    at.selectbox(key="runs.selected").set_value(store["queued"]).run()
    assert at.button(key="runs.retry").disabled and not at.button(key="runs.cancel").disabled
    at.button(key="runs.cancel").click().run()
    assert {r.id: r.status for r in stored_runs()}[store["queued"]] == "cancelled"
    assert f"Run #{store['queued']}: cancelled" in texts(at)


# --- Launch ------------------------------------------------------------------------------------------------


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_launch_shows_the_trainable_parameter_count_live(store, redis_db):
    at = open_page("launch")
    assert metric_values(at)["trainable parameters"] == "3,880"  # minilm-l6, d = 384: 100*8 + 8 + 8*384
    at.selectbox(key="launch.method").set_value("pt").run()
    assert metric_values(at)["trainable parameters"] == "38,400"
    assert not any(n.key == "launch.pt.pool" for n in at.number_input)  # only PT's own settings are shown
    at.selectbox(key="launch.model_choice").set_value("smollm2-135m").run()
    assert metric_values(at)["trainable parameters"] == "57,600"
    at.selectbox(key="launch.method").set_value("lamp").run()
    assert metric_values(at)["prompt tokens fed to the model"] == "25"  # the default pool p = 4
    at.number_input(key="launch.lamp.pool").set_value(1).run()
    assert metric_values(at)["prompt tokens fed to the model"] == "100"
    at.selectbox(key="launch.model_choice").set_value("other (hub id or local folder)").run()
    at.text_input(key="launch.model_other").input("google/flan-t5-base").run()
    assert metric_values(at)["trainable parameters"] == "after load"
    at.number_input(key="launch.hidden_size").set_value(768).run()
    assert metric_values(at)["trainable parameters"] == "6,952"  # the paper's T5-base figure


def test_launch_counts_an_adapter_before_loading_and_shows_only_its_settings(store, redis_db):
    at = open_page("launch")
    at.selectbox(key="launch.method").set_value("lora").run()
    assert metric_values(at)["trainable parameters"] == "73,728"  # PEFT's: query and value of 6 MiniLM layers
    assert metric_values(at)["prompt tokens fed to the model"] == "0"
    shown = {w.key for kind in ("number_input", "text_input") for w in getattr(at, kind)}
    assert {"launch.lora.rank", "launch.lora.alpha", "launch.lora.target_modules"} <= shown
    assert "launch.lamp.pool" not in shown
    at.text_input(key="launch.lora.target_modules").input("query,nope").run()
    assert at.error[0].value.startswith("target_modules: 'nope' is not a linear layer of this model")
    at.text_input(key="launch.lora.target_modules").input("all-linear").run()
    assert metric_values(at)["trainable parameters"] == "331,776"  # every layer's linears, the pooler left alone
    at.button(key="launch.submit").click().run()
    assert stored_runs()[-1].method == "lora" and stored_runs()[-1].config["method"]["target_modules"] == "all-linear"


def test_launch_shows_the_optimizer_steps_and_evaluations_before_launch(store, redis_db):
    at = open_page("launch")  # minilm-l6 on SST-2: 6,920 training sentences less the 500 held out for selection
    assert (metric_values(at)["optimizer steps"], metric_values(at)["evaluations"]) == ("402", "1")
    at.selectbox(key="launch.preset").set_value("paper protocol (training only)").run()
    assert at.selectbox(key="launch.method").value == "lamp"  # a training preset keeps the method
    assert at.selectbox(key="launch.lamp.q_init").value == "paper"  # and sets LAMP's Q = S, as the paper
    assert (at.selectbox(key="launch.select_on").value, at.selectbox(key="launch.backbone_dropout").value,
            at.number_input(key="launch.warmup_ratio").value) == ("validation", "on", 0.1)
    # selected on the reported set, as the paper: all 6,920 sentences train, 100 x 6,920 / 16 steps
    assert (metric_values(at)["optimizer steps"], metric_values(at)["evaluations"]) == ("43,250", "100")
    at.number_input(key="launch.epochs").set_value(3.0).run()
    assert (metric_values(at)["optimizer steps"], metric_values(at)["evaluations"]) == ("1,298", "3")


@pytest.mark.parametrize(("key", "value", "message"), [
    ("launch.lamp.pool", 3, "pool: prompt length 100 is not divisible by pool size 3; use a length that is a "
                            "multiple of 3, or pool 1 (no pooling)"),
    ("launch.lamp.rank", 120, "rank: rank 120 exceeds the prompt length 100"),
    ("launch.batch_size", 0, "batch_size: must be positive, got 0"),
    ("launch.seeds", "1, two", "seed: '1, two' is not a list of whole numbers separated by commas"),
])
def test_launch_rejects_invalid_values_inline_and_enqueues_nothing(store, redis_db, key, value, message):
    at = open_page("launch")
    widget = at.text_input(key=key) if key == "launch.seeds" else at.number_input(key=key)
    widget.set_value(value).run()
    assert [e.value for e in at.error] == [message]
    assert at.button(key="launch.submit").disabled  # AppTest, like a browser, cannot click it
    assert queue_length(redis_db) == 0 and len(stored_runs()) == 7


def test_launch_one_run_enqueues_exactly_one_job(store, redis_db):
    at = open_page("launch")
    at.number_input(key="launch.steps").set_value(2).run()
    at.button(key="launch.submit").click().run()
    new = stored_runs()[-1]
    assert new.id == 8 and new.status == "queued" and new.config["train"]["steps"] == 2
    assert new.config["model"] == "minilm-l6" and new.config["method"]["method"] == "lamp"
    assert queue_length(redis_db) == 1
    assert at.success[0].value == "Queued 1 run: #8"


def test_launch_sweep_preset_enqueues_one_job_per_run(store, redis_db):
    at = open_page("launch")
    at.selectbox(key="launch.preset").set_value("rank sweep 4-20").run()
    assert at.radio(key="launch.mode").value == "sweep"
    at.text_input(key="launch.seeds").input("1, 2").run()
    preview = at.dataframe[0].value
    assert len(preview) == 10 and sorted(set(preview["trainable params"])) == [  # minilm-l6: d = 384
        (100 + 1 + 384) * r for r in (4, 8, 12, 16, 20)]
    at.button(key="launch.submit").click().run()
    new = stored_runs()[7:]
    assert len(new) == 10 and queue_length(redis_db) == 10
    assert sorted({(r.config["method"]["rank"], r.config["train"]["seed"]) for r in new}) == \
        [(r, s) for r in (4, 8, 12, 16, 20) for s in (1, 2)]
    assert len({r.sweep_id for r in new}) == 1 and new[0].sweep_id is not None


def test_launch_custom_task_from_an_uploaded_csv(store, redis_db, tmp_path):
    at = open_page("launch")
    at.selectbox(key="launch.task_choice").set_value("custom (upload CSV/JSONL)").run()
    content = b"review,stars\n" + b"".join(b"good film %d,1\nbad film %d,0\n" % (i, i) for i in range(20))
    at.file_uploader(key="launch.upload").set_value(("reviews.csv", content, "text/csv"))
    at.run()
    assert "40 rows, columns: review, stars" in texts(at)
    at.selectbox(key="launch.text_column").set_value("review").run()
    assert metric_values(at)["optimizer steps"] == "3"  # 40 rows less 4 (test) and 3 (selection) held out: 33 / 16
    at.button(key="launch.submit").click().run()
    data = stored_runs()[-1].config["data"]
    assert data["text_column"] == "review" and data["label_column"] == "stars"
    assert data["train_file"].startswith("upload:")  # kept in the store: a worker on any host fetches it
    with session_scope() as session:
        assert fetch_upload(session, data["train_file"], tmp_path).read_bytes() == content
    assert queue_length(redis_db) == 1


# --- Compare -----------------------------------------------------------------------------------------------


def test_compare_reads_runs_from_the_url_and_shows_ratios_to_the_reference(store, redis_db):
    pt, lamp1, lamp2 = store["pt"], store["lamp1"], store["lamp2"]
    at = open_page("compare", runs=f"{pt},{lamp1},{lamp2}", ref=str(pt))
    table = at.dataframe[0].value
    assert table.loc["trainable params", f"#{lamp1} lamp · sst2"] == "1,320 (-79.4%)"
    assert table.loc["train time (s)", f"#{lamp2} lamp · sst2"] == "80 (-20.0%)"
    assert table.loc["accuracy", f"#{lamp2} lamp · sst2"] == "84.00 (+4.00)"
    assert table.loc["trainable params", f"#{pt} pt · sst2 (reference)"] == "6,400"
    at.selectbox(key="compare.ref").set_value(lamp1).run()
    assert at.query_params["ref"] == str(lamp1)
    assert at.dataframe[0].value.loc["trainable params", f"#{pt} pt · sst2"] == "6,400 (+384.8%)"


def test_compare_mean_std_table_and_config_differences(store, redis_db):
    pt, lamp1, lamp2 = store["pt"], store["lamp1"], store["lamp2"]
    at = open_page("compare", runs=f"{pt},{lamp1},{lamp2}")
    summary = next(df.value for df in at.dataframe if df.value.index.name == "method")
    assert summary.loc["lamp", "sst2 (accuracy)"] == "83.00 ± 1.41 (n=2)"
    assert summary.loc["pt", "sst2 (accuracy)"] == "80.00 (n=1)"
    config = at.dataframe[-1].value
    assert list(config.index) == ["method", "seed", "rank", "pool"]  # PT has no rank or pool: "—"
    assert config.loc["rank", f"#{pt} pt · sst2"] == "—"
    assert config.loc["seed", f"#{lamp2} lamp · sst2"] == "2"
    at.toggle(key="compare.diff").set_value(False).run()
    assert {"model", "task", "length", "rank", "steps"} <= set(at.dataframe[-1].value.index)


def test_compare_overlays_the_chosen_curve(store, redis_db):
    at = open_page("compare", runs=f"{store['lamp1']},{store['running']}")
    assert at.selectbox(key="compare.curve").options == ["eval_accuracy", "loss"]
    spec = json.loads(at.get("vega_lite_chart")[-1].proto.spec)
    assert spec["encoding"]["color"]["field"] == "run" and spec["title"] == "loss per step"


def test_compare_draws_evaluations_against_seconds_of_training(store, redis_db):
    with session_scope() as session:
        for name, seconds in (("pt", 40.0), ("lamp1", 25.0)):
            session.add(MetricPoint(run_id=store[name], step=5, key="eval_train_seconds", value=seconds))
    at = open_page("compare", runs=f"{store['pt']},{store['lamp1']}")
    at.selectbox(key="compare.curve").set_value("eval_accuracy").run()
    assert at.selectbox(key="compare.curve").options == ["eval_accuracy", "loss"]  # the time is an axis, no curve
    assert at.radio(key="compare.x").value == "seconds of training"
    chart = at.get("vega_lite_chart")[-1].proto
    spec = json.loads(chart.spec)
    assert spec["encoding"]["x"] == {"field": "seconds", "title": "seconds of training", "type": "quantitative"}
    (dataset,) = chart.datasets  # Streamlit moves the chart's data out of the spec, as Arrow
    values = pyarrow.ipc.open_stream(dataset.data.data).read_all().to_pylist()
    assert sorted((v["run"].split()[1], v["seconds"], v["value"]) for v in values) == [("lamp", 25.0, 82.0),
                                                                                       ("pt", 40.0, 80.0)]


def test_compare_asks_for_two_runs_and_keeps_the_selection_in_the_url(store, redis_db):
    at = open_page("compare", runs=str(store["pt"]))
    assert "Pick two or more runs" in at.info[0].value
    at.multiselect(key="compare.runs").select(store["lamp1"]).run()
    assert at.query_params["runs"] == f"{store['pt']},{store['lamp1']}"
    assert at.dataframe


# --- Dispersion --------------------------------------------------------------------------------------------


def test_dispersion_opens_on_figure_6_pt_blue_against_lamp_red_in_one_t_sne(store, redis_db):
    at = open_page("dispersion")  # the newest PT and LAMP runs of one model and task: #pt and #lamp2 on SST-2
    assert at.radio(key="dispersion.mode").value == "PT vs LAMP (the paper's Figure 6)"
    assert (at.selectbox(key="dispersion.fig6.pt").value, at.selectbox(key="dispersion.fig6.lamp").value) == (
        store["pt"], store["lamp2"])
    chart = at.get("vega_lite_chart")[0].proto
    spec = json.loads(chart.spec)
    assert spec["encoding"]["x"]["title"] == "t-SNE 1"
    assert spec["encoding"]["color"]["scale"] == {"domain": ["before: PT", "after: LAMP"],
                                                  "range": ["#1f77b4", "#d62728"]}
    (dataset,) = chart.datasets
    rows = pyarrow.ipc.open_stream(dataset.data.data).read_all().to_pylist()
    assert Counter(row["run"] for row in rows) == {"before: PT": 10, "after: LAMP": 10}  # each run's 10 tokens
    assert (f"tiny-t5 / sst2, after training: PT run #{store['pt']}'s 10 prompt tokens (blue, before) and LAMP run "
            f"#{store['lamp2']}'s 10 tokens of the pooled prompt P' (what the model reads) (red, after), one t-SNE "
            "fit over both.") in texts(at)
    at.selectbox(key="dispersion.fig6.lamp").set_value(store["lamp1"]).run()
    at.radio(key="dispersion.fig6.projection").set_value("PCA (keeps distances' scale)").run()
    assert json.loads(at.get("vega_lite_chart")[0].proto.spec)["encoding"]["x"]["title"] == "PCA 1"
    assert f"LAMP run #{store['lamp1']}'s 10 tokens" in texts(at) and "one PCA fit over both" in texts(at)
    at.radio(key="dispersion.mode").set_value("before vs after training").run()
    assert at.multiselect(key="dispersion.runs").value == [store["pt"], store["lamp2"]]


def test_dispersion_projects_pt_and_lamp_into_one_space(store, redis_db):
    at = open_page("dispersion", mode="training")
    assert at.multiselect(key="dispersion.runs").value == [store["pt"], store["lamp2"]]
    (chart,) = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")][:1]
    assert "facet" not in chart and chart["encoding"]["x"]["title"] == "PCA 1"  # one picture, shared axes
    picture = at.dataframe[0].value.set_index("run")["mean pairwise distance (picture)"]
    assert picture.index.str.contains("pt").any() and picture.index.str.contains("lamp").any()
    pt, lamp = (picture[picture.index.str.contains(name)].iloc[0] for name in (" pt", " lamp"))
    assert pt < lamp  # PT's tokens were made tighter (spread 0.2) than LAMP's (1.4)
    figures = at.dataframe[1].value.set_index("method")
    assert figures.loc["PT", "mean pairwise distance after"] == 0.2
    assert figures.loc["LAMP", "mean pairwise distance change %"] == 40.0
    at.radio(key="dispersion.projection").set_value("t-SNE (keeps neighbourhoods)").run()
    assert json.loads(at.get("vega_lite_chart")[0].proto.spec)["encoding"]["x"]["title"] == "t-SNE 1"
    at.radio(key="dispersion.phase").set_value("before and after").run()
    assert len(at.dataframe[0].value) == 4  # two runs x two phases


# --- Run page ----------------------------------------------------------------------------------------------


def test_run_page_shows_results_and_offers_the_files(store, redis_db):
    at = open_page("run", id=str(store["lamp1"]))
    assert at.title[0].value == f"Run #{store['lamp1']}"
    assert metric_values(at) == {"accuracy (main)": "82.00"}
    costs = at.dataframe[0].value.set_index("quantity")["value"]
    assert costs["trainable params"] == "1,320" and costs["hidden size d"] == "64"
    assert [b.label for b in at.get("download_button")] == ["prompt (safetensors)", "PEFT adapter (zip)",
                                                           "result.json"]
    assert at.expander[-1].label == "data splits"


def test_run_page_says_which_evaluation_was_kept_and_that_patience_ended_the_run(store, redis_db, tmp_path):
    folder = tmp_path / "home" / "runs" / str(store["lamp1"])
    result = json.loads((folder / "result.json").read_text())
    result.update(early_stop_step=6, config={"train": {"patience": 2}},
                  history={"train": [], "eval": [{"step": 2, "accuracy": 70.0}, {"step": 4, "accuracy": 69.0},
                                                 {"step": 6, "accuracy": 70.0}]})
    (folder / "result.json").write_text(json.dumps(result))
    with session_scope() as session:
        session.get(Run, store["lamp1"]).best_metrics = {"accuracy": 70.0, "step": 2}
    at = open_page("run", id=str(store["lamp1"]))
    assert "the prompt of step 2, the best of 3 evaluations on the selection split" in texts(at)
    assert at.info[0].value.startswith("Stopped early at step 6 of 10: 2 evaluations in a row brought no better")


def test_run_page_of_a_failed_run_shows_why_and_retries(store, redis_db):
    at = open_page("run", id=str(store["failed"]))
    reason = "Failed: TrainingDiverged: the loss became NaN at step 3; lower the learning rate"
    assert at.error[0].value == plain(reason)  # the run's error, shown as text
    assert not at.get("download_button")
    at.button(key="run.retry").click().run()
    assert stored_runs()[-1].parent_id == store["failed"] and queue_length(redis_db) == 1


def test_run_page_try_it_goes_through_the_queue(store, redis_db):
    at = open_page("run", id=str(store["pt"]))
    at.text_input(key=f"run.predict.{store['pt']}.text").input("a gripping film").run()
    at.button(key=f"run.predict.{store['pt']}.go").click().run()
    assert queue_length(redis_db, "lamp-predict") == 1
    assert "Waiting for a worker" in texts(at)


def test_unknown_run_id_is_said_plainly(store, redis_db):
    at = open_page("run", id="999")
    assert at.warning[0].value == "Run #999 is not in the store."


def test_unreachable_database_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    assert len(at.error) == 1 and at.error[0].value.startswith("DATABASE_URL: cannot open the store")
