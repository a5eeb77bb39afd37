"""The dashboard's pure parts: chart specs, comparison tables, form parsing, catalogue facts, no torch import."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from app import catalog, charts, files, forms, projection, tables
from lamp_engine.aliases import ModelShape
from lamp_engine.config import ConfigError


def record(run_id: int, method: str, task: str = "cb", seed: int = 1, value: float | None = 80.0, **extra) -> dict:
    config = {"model": "tiny-t5", "task": task, "method": {"method": method, "rank": 8}, "train": {"seed": seed}}
    return {"id": run_id, "status": "succeeded", "method": method, "task": task, "model": "tiny-t5",
            "config": config, "main_metric": "accuracy", "main_metric_value": value,
            "metrics": {"accuracy": value}, **extra}


def test_curves_chart_overlays_runs_by_colour():
    frame = charts.curves_frame([(1, 1, 0.9), (1, 2, 0.7), (2, 1, 0.8)], {1: "#1 pt · cb", 2: "#2 lamp · cb"})
    assert frame.to_dict("records")[2] == {"run": "#2 lamp · cb", "step": 1, "value": 0.8}
    spec = charts.curves_chart(frame, "loss").to_dict()
    assert spec["mark"]["type"] == "line"
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"], spec["encoding"]["color"]["field"]) \
        == ("step", "value", "run")
    assert spec["title"] == "loss per step"


def test_joint_projection_puts_every_runs_tokens_in_one_space_and_keeps_their_relative_spread():
    rng = np.random.default_rng(0)
    wide = rng.normal(scale=3.0, size=(25, 64))  # a PT prompt: tokens far apart
    tight = rng.normal(scale=0.5, size=(25, 64))  # a LAMP prompt: tokens close together
    sets = {("#1 pt", "PT", "after"): wide, ("#2 lamp", "LAMP", "after"): tight}
    model_space = {run: float(np.mean([np.linalg.norm(a - b) for i, a in enumerate(m) for b in m[i + 1:]]))
                   for (run, _, _), m in sets.items()}
    for method in ("pca", "tsne"):
        points = projection.project_jointly(sets, method)
        assert len(points) == 50 and set(points["run"]) == {"#1 pt", "#2 lamp"}
    points = projection.project_jointly(sets, "pca")
    picture = projection.spread(points).set_index("run")["mean pairwise distance (picture)"]
    assert model_space["#1 pt"] > model_space["#2 lamp"] and picture["#1 pt"] > picture["#2 lamp"]
    spec = charts.joint_dispersion_chart(points, "pca").to_dict()
    assert "facet" not in spec and spec["mark"]["type"] == "point"  # one chart, shared axes
    assert (spec["encoding"]["color"]["field"], spec["encoding"]["shape"]["field"]) == ("run", "phase")
    with pytest.raises(ValueError, match="different hidden sizes"):
        projection.project_jointly({**sets, ("#3 pt", "PT", "after"): rng.normal(size=(5, 32))}, "pca")


def test_compare_table_reads_lamp_vs_pt_as_relative_savings():
    pt = record(1, "pt", trainable_params=76800, train_seconds=100.0, peak_memory_mb=1000.0)
    lamp = record(2, "lamp", value=82.5, trainable_params=6952, train_seconds=70.0, peak_memory_mb=900.0)
    table = tables.compare_table([pt, lamp], reference_id=1)
    assert table.loc["trainable params", "#2 lamp · cb"] == "6,952 (-90.9%)"
    assert table.loc["train time (s)", "#2 lamp · cb"] == "70 (-30.0%)"
    assert table.loc["accuracy", "#2 lamp · cb"] == "82.50 (+2.50)"
    assert table.loc["prompt tokens", "#2 lamp · cb"] == "—"
    ratios = tables.ratio_frame([pt, lamp], 1).set_index(["run", "quantity"])["change %"]
    assert ratios[("#2 lamp · cb", "peak memory (MB)")] == -10.0
    assert charts.ratio_chart(tables.ratio_frame([pt, lamp], 1)).to_dict()["mark"]["type"] == "bar"


def test_seed_summary_is_methods_by_tasks_mean_std():
    runs = [record(1, "pt", seed=1, value=70.0), record(2, "pt", seed=2, value=74.0),
            record(3, "lamp", seed=1, value=80.0), record(4, "lamp", seed=2, value=82.0),
            record(5, "lamp", task="rte", seed=1, value=60.0), record(6, "lamp", task="rte", seed=2, value=64.0)]
    summary = tables.seed_summary(runs)
    assert summary.loc["pt", "cb (accuracy)"] == "72.00 ± 2.83 (n=2)"
    assert summary.loc["lamp", "rte (accuracy)"] == "62.00 ± 2.83 (n=2)"
    assert summary.loc["pt", "rte (accuracy)"] == "—"
    assert tables.seed_summary([record(1, "pt"), record(2, "lamp")]) is None


def test_seed_summary_names_the_field_that_separates_groups_of_one_method():
    r4 = [record(i, "lamp", seed=i) for i in (1, 2)]
    r16 = [record(i, "lamp", seed=i) for i in (3, 4)]
    for r in r16:
        r["config"]["method"]["rank"] = 16
    assert list(tables.seed_summary(r4 + r16).index) == ["lamp (rank=16)", "lamp (rank=8)"]


def test_config_table_differences_only():
    a, b = record(1, "pt"), record(2, "lamp", seed=2)
    assert list(tables.config_table([a, b], differences_only=True).index) == ["method", "seed"]
    assert tables.config_table([a, b]).loc["model", "#1 pt · cb"] == "tiny-t5"


def test_runs_frame_badges_and_queue_positions():
    frame = tables.runs_frame([record(1, "pt", status="queued", value=None), record(2, "lamp")], {1: 3})
    assert frame["status"].tolist() == ["◌ queued", "✔ succeeded"]
    assert frame["queue"].tolist()[0] == 3


def test_runs_selected_on_the_reported_set_are_marked_and_never_grouped_with_held_out_ones():
    paper = [record(i, "lamp", seed=i) for i in (1, 2)]
    held = [record(i, "lamp", seed=i - 2) for i in (3, 4)]
    for r in paper:
        r["config"]["data"] = {"select_on": "validation"}
    held[1]["config"]["data"] = {"select_on": "heldout"}  # the default, as written by this release
    assert tables.runs_frame(paper + held)["selected on"].tolist() == ["⚑ reported set", "⚑ reported set",
                                                                      "held-out split", "held-out split"]
    compared = tables.compare_table([held[0], paper[0]], reference_id=3)
    assert compared.loc["selected on"].tolist() == ["held-out split", "⚑ reported set"]
    held[0]["config"]["data"] = {"select_on": "heldout"}
    assert list(tables.seed_summary(paper + held).index) == ["lamp (select_on=heldout)", "lamp (select_on=validation)"]


@pytest.mark.parametrize(("text", "expected"), [("4, 8,12", [4, 8, 12]), ("20", [20]), (" 1 ,2 ,", [1, 2])])
def test_parse_list(text, expected):
    assert forms.parse_list("rank", text) == expected


def test_parse_list_names_the_field():
    with pytest.raises(ConfigError, match=r"^rank: '4, x' is not a list of whole numbers"):
        forms.parse_list("rank", "4, x")
    with pytest.raises(ConfigError, match="^pool: give at least one value"):
        forms.parse_list("pool", " , ")


def test_launch_request_expands_and_validates_every_point():
    base = {"model": "tiny-t5", "task": "sst2", "method": "lamp", "length": 100, "rank": 8}
    request = forms.LaunchRequest(base, {"pool": [1, 2, 4], "seed": [1, 2]}, shape=ModelShape(64))
    assert request.is_sweep and len(request.configs) == 6
    assert [row["prompt tokens"] for row in forms.preview_rows(request)][::2] == [100, 50, 25]
    with pytest.raises(ConfigError, match="^pool: prompt length 100 is not divisible by pool size 3"):
        forms.LaunchRequest(base, {"pool": [1, 3]}).configs  # noqa: B018 - validating is the point
    assert not forms.LaunchRequest(base, {"seed": [7]}).is_sweep


def test_catalogue_matches_the_engine():
    from lamp_engine.aliases import ALIASES
    from lamp_engine.tasks import TASKS

    assert catalog.DEFAULT_MODEL in ALIASES
    assert set(catalog.task_names()) == set(TASKS)
    for preset in catalog.PRESETS:
        assert forms.LaunchRequest({"model": "tiny-t5", "task": "cb", **preset.values}, preset.grid,
                                   ModelShape(576)).configs


def test_zip_folder_keeps_the_adapter_files(tmp_path):
    folder = tmp_path / "peft"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "sub" / "x.bin").write_bytes(b"\x00\x01")
    archive = zipfile.ZipFile(io.BytesIO(files.zip_folder(folder)))
    assert sorted(archive.namelist()) == ["peft/adapter_config.json", "peft/sub/x.bin"]
    assert archive.read("peft/sub/x.bin") == b"\x00\x01"


def test_dispersion_figures_change():
    figures = tables.dispersion_figures([(record(1, "lamp"), {"prompt": {
        "before": {"mean_pairwise_distance": 2.0, "covariance_trace": 4.0},
        "after": {"mean_pairwise_distance": 3.0, "covariance_trace": 2.0}}})])
    row = figures.iloc[0]
    assert (row["mean pairwise distance change %"], row["covariance trace change %"]) == (50.0, -50.0)
    spec = charts.dispersion_figure_chart(figures).to_dict()
    (values,) = spec["datasets"].values()
    assert [(v["phase"], v["distance"]) for v in values] == [("before", 2.0), ("after", 3.0)]
    assert spec["encoding"]["xOffset"]["field"] == "phase"


def test_app_modules_do_not_import_torch():
    code = ("import sys; import app.backend, app.charts, app.tables, app.forms, app.catalog, app.launcher; "
            "app.catalog.task_names(); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
