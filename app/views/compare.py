"""Compare: two or more runs side by side (selection kept in the URL), with ratios to a reference run,
overlaid curves and the paper's mean ± std table when runs differ only by seed."""

from __future__ import annotations

import streamlit as st

from app import backend, charts
from app.downsample import CURVE_POINTS
from app.tables import compare_table, config_table, ratio_frame, run_label, seed_summary
from app.ui import follow_address, ids_from_query, keep_in_query, pick_runs

TIME_KEY = "eval_train_seconds"  # the seconds of training done at each evaluation (lamp_engine.train)


def choose_reference(selected: list[int], by_id: dict) -> int:
    wanted = st.query_params.get("ref", "")
    follow_address("ref", "compare.ref", next((i for i in selected if str(i) == wanted), selected[0]), selected)
    reference = st.selectbox("reference run", selected, key="compare.ref", format_func=lambda i: run_label(by_id[i]))
    keep_in_query("ref", [reference], "compare.ref")
    return reference


def show_curves(records: list[dict]) -> None:
    """One metric's curves overlaid (the choice kept in the address as ?curve=), each line thinned to a few
    hundred points unless every point is asked for."""
    ids = [r["id"] for r in records]
    keys = backend.metric_keys(ids)
    if not keys:
        st.info("No training curves recorded for these runs yet.")
        return
    shown = [k for k in keys if k != TIME_KEY]
    wanted = st.query_params.get("curve", "loss")
    follow_address("curve", "compare.curve", wanted if wanted in shown else shown[0], shown)
    c1, c2 = st.columns([3, 1])
    key = c1.selectbox("curve", shown, key="compare.curve")
    keep_in_query("curve", [key], "compare.curve")
    limit = None if c2.toggle("every point", key="compare.full",
                              help=f"Lines are thinned to about {CURVE_POINTS} points each (largest-triangle "
                                   "buckets, keeping both ends and the lowest and highest value)") else CURVE_POINTS
    labels = {r["id"]: run_label(r) for r in records}
    timed = key.startswith("eval_") and TIME_KEY in keys  # evaluations on the way recorded the time of training
    if timed and st.radio("against", ["seconds of training", "steps"], horizontal=True,
                          key="compare.x") == "seconds of training":
        frame = charts.curves_frame(backend.load_series(ids, key, limit), labels,
                                    backend.load_series(ids, TIME_KEY, None))
        st.altair_chart(charts.curves_chart(frame, key, x="seconds"), width="stretch")
        return
    frame = charts.curves_frame(backend.load_series(ids, key, limit), labels)
    st.altair_chart(charts.curves_chart(frame, key), width="stretch")


def main() -> None:
    st.title("Compare")
    offered = backend.picker_runs(ids_from_query("runs"))
    by_id = {r["id"]: r for r in offered}
    selected = pick_runs("runs to compare", offered, "runs", default=[], key="compare.runs")
    if len(selected) < 2:
        st.info("Pick two or more runs (the selection is kept in the page's address, so it can be shared).")
        return
    records = [by_id[i] for i in selected]
    reference = choose_reference(selected, by_id)

    st.subheader("Results and costs")
    st.caption("Metrics: value (difference in points to the reference). Costs: value (change to the reference). "
               "'⚑ reported set': the run's best evaluation was picked on the set it reports (--select-on "
               "validation, as the paper), not on a held-out split.")
    st.dataframe(compare_table(records, reference), width="stretch")
    ratios = ratio_frame(records, reference)
    if not ratios.empty:
        st.altair_chart(charts.ratio_chart(ratios), width="stretch")

    st.subheader("Curves")
    st.caption("Loss per step; evaluations made on the way (--eval-every) also against seconds of training.")
    show_curves(records)

    summary = seed_summary(records)
    if summary is not None:
        st.subheader("Mean ± std over seeds")
        st.caption("Runs whose configs differ only by the seed, grouped; methods as rows, tasks as columns.")
        st.dataframe(summary, width="stretch")

    st.subheader("Configuration")
    only_diff = st.toggle("differences only", key="compare.diff", value=True)
    st.dataframe(config_table(records, differences_only=only_diff), width="stretch")


main()
