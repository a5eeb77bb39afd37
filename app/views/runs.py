"""Runs: every run with its status and results, live progress and loss curves, and the queue actions.

The live part is a fragment that re-runs by itself every few seconds while any run is queued or running.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, charts
from app.tables import STATUS_BADGES, badge, run_label, runs_frame
from app.ui import PAGES, describe, link_to_run, live, plain, queue_call
from store.status import ACTIVE, RETRYABLE, RunStatus

REFRESH_SECONDS = 2.0
CURVE_RUNS = 6  # loss curves drawn for at most this many running runs


def status_counts(records: list[dict[str, Any]]) -> None:
    counts = Counter(r["status"] for r in records)
    for column, status in zip(st.columns(len(STATUS_BADGES)), STATUS_BADGES, strict=True):
        column.metric(badge(status), counts.get(status, 0))


def show_workers() -> None:
    workers = queue_call(backend.workers_up, fallback=None)
    if workers is None:
        return
    if not workers:
        st.warning("No worker is up: queued runs wait until one starts (`lamp worker`, or `lamp up`).")
        return
    frame = pd.DataFrame(workers)
    frame["queues"] = frame["queues"].map(", ".join)
    st.caption(f"{len(workers)} worker{'s' if len(workers) > 1 else ''} up")
    st.dataframe(frame, hide_index=True, width="stretch")


def show_progress(active: list[dict[str, Any]]) -> None:
    """A progress bar per active run and the loss curves of the running ones."""
    for r in active:
        total = r.get("total_steps")
        steps = f"step {r.get('step') or 0}/{total}" if total else "waiting for a worker"
        st.progress(min(max(float(r.get("progress") or 0.0), 0.0), 1.0),
                    text=f"{run_label(r)} · {badge(r['status'])} · {steps}")
    running = [r for r in active if r["status"] == RunStatus.RUNNING][:CURVE_RUNS]
    series = backend.load_series([r["id"] for r in running], "loss")
    if series:
        frame = charts.curves_frame(series, {r["id"]: run_label(r) for r in running})
        st.altair_chart(charts.curves_chart(frame, "loss"), width="stretch")


def show_table(records: list[dict[str, Any]]) -> None:
    positions = queue_call(lambda: backend.queue_positions(records), fallback={})
    frame = runs_frame(records, positions)
    frame["submitted by"] = [r.get("submitted_by") for r in records]
    st.dataframe(
        frame, hide_index=True, width="stretch", height=560 if len(frame) > 15 else "auto",
        column_config={
            "id": st.column_config.NumberColumn("id", format="#%d"),
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0),
            "trainable params": st.column_config.NumberColumn(format="localized"),
            "queue": st.column_config.NumberColumn("queue position"),
        },
    )


def live_section(status_filter: list[str]) -> None:
    """Everything that changes while runs go; re-run on its own by the fragment."""
    records = backend.load_runs()
    status_counts(records)
    active = [r for r in records if r["status"] in ACTIVE]
    if active:
        st.subheader("In progress")
        show_progress(active)
    st.subheader("All runs")
    shown = [r for r in records if r["status"] in status_filter] if status_filter else records
    show_table(shown)


def show_failure(record: dict[str, Any]) -> None:
    if record["status"] == RunStatus.FAILED:
        st.error(plain(f"Run #{record['id']} failed: {record.get('error') or 'no reason recorded'}"))


def actions(records: list[dict[str, Any]]) -> None:
    """Cancel, stop, retry and open one run; send several to Compare."""
    by_id = {r["id"]: r for r in records}
    run_id = st.selectbox("run", list(by_id), format_func=lambda i: describe(by_id[i]), key="runs.selected")
    if run_id is None:
        return
    record = by_id[run_id]
    show_failure(record)
    allowed = backend.may_manage(record)
    if not allowed:
        st.caption(plain(f"Only its owner ({record.get('submitted_by') or 'nobody recorded'}) or an admin can "
                         f"stop, cancel or retry run #{run_id}."))
    c1, c2, c3 = st.columns(3)
    stop_label = "Stop" if record["status"] == RunStatus.RUNNING else "Cancel"
    if c1.button(stop_label, disabled=not allowed or record["status"] not in ACTIVE, key="runs.cancel"):
        outcome = queue_call(lambda: backend.cancel(run_id))
        if outcome:
            st.info(f"Run #{run_id}: {outcome}")
    if c2.button("Retry", disabled=not allowed or record["status"] not in RETRYABLE, key="runs.retry"):
        new_id = queue_call(lambda: backend.retry(run_id))
        if new_id:
            st.success(f"Run #{run_id} queued again as run #{new_id}")
    with c3:
        link_to_run(run_id)
    picked = st.multiselect("compare runs", list(by_id), format_func=lambda i: describe(by_id[i]),
                            key="runs.compare")
    if st.button("Compare selected", disabled=len(picked) < 2, key="runs.compare_go"):
        st.switch_page(PAGES["compare"], query_params={"runs": ",".join(map(str, picked))})


def main() -> None:
    st.title("Runs")
    show_workers()
    status_filter = st.multiselect("show statuses", list(STATUS_BADGES), key="runs.filter",
                                   format_func=badge, placeholder="all statuses")
    records = backend.load_runs()
    if not records:
        st.info("No runs yet: start one on the Launch page.")
        st.page_link(PAGES["launch"], label="Launch a run", icon=":material/rocket_launch:")
        return
    any_active = any(r["status"] in ACTIVE for r in records)
    live(live_section, REFRESH_SECONDS if any_active else None)(status_filter)
    st.subheader("Act on a run")
    actions(records)
    failed = [r for r in records if r["status"] == RunStatus.FAILED]
    if failed:
        with st.expander(f"Failures ({len(failed)})"):
            for r in failed[:20]:
                st.markdown(f"**{plain(run_label(r))}** · {plain(r.get('model'))}")
                st.code(r.get("error") or "no reason recorded", language=None)


main()
