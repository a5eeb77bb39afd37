"""The dashboard at scale, kept honest at a small size: the Runs view's filters and pages come from the database
and hold exactly what filtering and paging every run in pandas gives, on SQLite and on PostgreSQL; run pickers
offer the newest runs and the ones a shared address names; and curves thinned by LTTB keep their ends, their
lowest and highest value, and the points a plain LTTB picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert

from app import backend
from app.downsample import lttb, thin_series
from bench.dashboard import fill_store
from store.db import ensure_schema, session_scope
from store.models import MetricPoint

RUNS = 230
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def filled(database_url, lamp_home) -> pd.DataFrame:
    """A store of RUNS made-up runs of every status (the bench's filler); every run as a pandas frame."""
    ensure_schema()
    fill_store(lamp_home, RUNS, 0)
    return pd.DataFrame(backend.load_runs())[["id", "status", "method", "task"]]


def reference(frame: pd.DataFrame, status=None, method=None, task=None) -> pd.DataFrame:
    """The runs these filters keep, newest first, filtered in pandas."""
    for column, values in (("status", status), ("method", method), ("task", task)):
        if values is not None:
            frame = frame[frame[column].isin(values)]
    return frame.sort_values("id", ascending=False)


FILTERS = [{}, {"status": ("succeeded",)}, {"status": ("failed", "cancelled")}, {"method": ("lamp",)},
           {"status": ("succeeded",), "method": ("lamp", "pt"), "task": ("cb", "rte")}, {"task": ("nothing",)}]


def test_runs_are_filtered_and_paged_in_the_database_as_pandas_does_it(filled):
    assert len(filled) == RUNS and set(filled["status"]) == {"succeeded", "failed", "cancelled", "queued", "running"}
    assert backend.status_counts() == filled["status"].value_counts().to_dict()
    assert backend.run_values("task") == sorted(filled["task"].unique())
    for filters in FILTERS:
        expected = reference(filled, **filters)["id"].tolist()
        assert backend.count_runs(**filters) == len(expected), filters
        for offset in (0, 20, 40, len(expected) - 3):
            page = backend.load_runs(**filters, limit=20, offset=max(offset, 0))
            assert [r["id"] for r in page] == expected[max(offset, 0):max(offset, 0) + 20], (filters, offset)


def test_a_picker_offers_the_newest_runs_and_those_named_in_the_address(filled):
    newest = reference(filled)["id"].tolist()
    oldest = newest[-1]
    offered = [r["id"] for r in backend.picker_runs([oldest], newest=5)]
    assert offered == [*newest[:5], oldest]
    finished = reference(filled, status=("succeeded",), method=("lamp",))["id"].tolist()
    assert [r["id"] for r in backend.picker_runs([], status=["succeeded"], method=["lamp"], newest=3)] == finished[:3]
    assert backend.picker_runs([oldest], status=["nothing"]) == []


def naive_lttb(x: list[float], y: list[float], limit: int) -> list[int]:
    """LTTB as the paper writes it, one point at a time: the reference the vectorised one must match."""
    size = (len(x) - 2) / (limit - 2)
    kept = [0]
    for bucket in range(limit - 2):
        start, end = int(bucket * size) + 1, int((bucket + 1) * size) + 1
        following = range(end, min(int((bucket + 2) * size) + 1, len(x) - 1)) if bucket < limit - 3 else [len(x) - 1]
        mean_x = sum(x[i] for i in following) / len(following)
        mean_y = sum(y[i] for i in following) / len(following)
        a = kept[-1]
        areas = [abs((x[a] - mean_x) * (y[i] - y[a]) - (x[a] - x[i]) * (mean_y - y[a])) for i in range(start, end)]
        kept.append(start + areas.index(max(areas)))
    return [*kept, len(x) - 1]


def test_lttb_keeps_the_ends_the_extremes_and_the_points_plain_lttb_picks():
    rng = np.random.default_rng(3)
    steps = np.arange(1, 5001, dtype=float)
    loss = 2.0 / np.sqrt(steps) + rng.normal(0, 0.05, len(steps))
    loss[1234] = 9.0  # a spike, as a diverging step leaves
    kept = lttb(steps, loss, 300)
    assert kept[0] == 0 and kept[-1] == len(steps) - 1
    assert {int(np.argmin(loss)), int(np.argmax(loss)), 1234} <= set(kept.tolist())
    assert 300 <= len(kept) <= 302 and np.all(np.diff(kept) > 0)
    plain = naive_lttb(steps.tolist(), loss.tolist(), 300)
    assert set(plain) <= set(kept.tolist()) and len(set(kept.tolist()) - set(plain)) <= 2
    assert lttb(steps[:300], loss[:300], 300).tolist() == list(range(300))  # short lines are left whole
    with pytest.raises(ValueError, match="limit must be at least 3"):
        lttb(steps, loss, 2)


def test_curves_are_thinned_per_run_unless_every_point_is_asked_for(lamp_home):
    ensure_schema()
    fill_store(lamp_home, 20, 0)
    lengths = {1: 3000, 2: 50}
    with session_scope() as session:
        session.execute(insert(MetricPoint), [{"run_id": run, "step": s, "key": "loss", "value": 1.0 / s}
                                              for run, count in lengths.items() for s in range(1, count + 1)])
    thinned = backend.load_series([1, 2], "loss", limit=100)
    full = backend.load_series([1, 2], "loss", limit=None)
    assert [sum(1 for row in full if row[0] == run) for run in (1, 2)] == [3000, 50]
    first = [row for row in thinned if row[0] == 1]
    assert len(first) == 100 and first[0] == (1, 1, 1.0) and first[-1] == (1, 3000, 1.0 / 3000)
    assert [row for row in thinned if row[0] == 2] == [row for row in full if row[0] == 2]
    assert set(thinned) <= set(full) and thin_series([], 100) == []


def test_the_runs_view_shows_the_page_and_filters_its_address_names(lamp_home, redis_url):
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from app.views.runs import PAGE_SIZE

    ensure_schema()
    fill_store(lamp_home, RUNS, 0)
    every = pd.DataFrame(backend.load_runs())
    expected = reference(every, status=("succeeded",), task=("sst2", "cb"))["id"].tolist()
    config.set_option("server.address", "127.0.0.1")  # loopback, as `lamp up` binds it: no login asked
    try:
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
        at.query_params.update({"status": "succeeded", "task": "sst2,cb", "page": "2"})  # Runs: the default page
        at.run()
    finally:
        config.set_option("server.address", None)
    assert not at.exception, [e.message for e in at.exception]
    assert at.multiselect(key="runs.filter").value == ["succeeded"]
    assert at.multiselect(key="runs.task").value == ["sst2", "cb"]
    assert at.number_input(key="runs.page").value == 2
    second = expected[PAGE_SIZE:2 * PAGE_SIZE]
    assert 0 < len(second) < PAGE_SIZE and at.dataframe[0].value["id"].tolist() == second
    assert f"runs {PAGE_SIZE + 1}-{len(expected)} of {len(expected)}, newest first" in [c.value for c in at.caption]
    assert len(at.selectbox(key="runs.selected").options) == len(second)  # acting on the runs of the page shown
    assert at.selectbox(key="runs.selected").value == expected[PAGE_SIZE]


def test_a_new_address_in_the_same_session_wins_over_the_widgets_old_state(lamp_home, redis_url):
    """Back, a link or a switch to a shared address runs the page in the same session: the filters and the page
    follow the new address, and a filter the user then picks is kept and written back to the address."""
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    ensure_schema()
    fill_store(lamp_home, RUNS, 0)
    config.set_option("server.address", "127.0.0.1")
    try:
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=60)
        at.run()
        assert at.multiselect(key="runs.filter").value == [] and at.number_input(key="runs.page").value == 1
        at.query_params.clear()
        at.query_params.update({"status": "succeeded", "task": "sst2,cb", "page": "2"})
        at.run()
        assert at.multiselect(key="runs.filter").value == ["succeeded"]
        assert at.multiselect(key="runs.task").value == ["sst2", "cb"] and at.number_input(key="runs.page").value == 2
        at.multiselect(key="runs.filter").select("failed").run()
        assert at.multiselect(key="runs.filter").value == ["succeeded", "failed"]
        assert at.query_params["status"] == "succeeded,failed" and at.query_params["task"] == "sst2,cb"
        at.run()  # a rerun without a new address keeps the user's pick
        assert at.multiselect(key="runs.filter").value == ["succeeded", "failed"]
    finally:
        config.set_option("server.address", None)
    assert not at.exception, [e.message for e in at.exception]
