"""Runs: every run with its status and results, live progress and loss curves, and the queue actions.

The live part is a fragment that re-runs by itself every few seconds while any run is queued or running. The
table shows one page of runs, filtered by status, method and task and paged in the database (a store of ten
thousand runs costs what one page holds); the filters and the page are kept in the address.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd
import streamlit as st

from app import backend, charts
from app.tables import STATUS_BADGES, badge, run_label, runs_frame
from app.ui import (
    PAGES,
    describe,
    follow_address,
    items_from_query,
    keep_in_query,
    link_to_run,
    live,
    plain,
    queue_call,
)
from store.status import ACTIVE, RETRYABLE, RunStatus

REFRESH_SECONDS = 2.0
CURVE_RUNS = 6  # loss curves drawn for at most this many running runs
ACTIVE_SHOWN = 20  # progress bars for at most this many queued or running runs
PAGE_SIZE = 50  # runs per page of the table
FAILURES_SHOWN = 20


@dataclass(frozen=True)
class Listing:
    """Which runs the table shows: statuses, methods and tasks (empty: any), and the page (from 1)."""

    statuses: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    page: int = 1

    def filters(self) -> dict[str, tuple[str, ...] | None]:
        return {"status": self.statuses or None, "method": self.methods or None, "task": self.tasks or None}

    def records(self) -> list[dict[str, Any]]:
        return backend.load_runs(**self.filters(), limit=PAGE_SIZE, offset=(self.page - 1) * PAGE_SIZE)


def status_counts(counts: dict[str, int]) -> None:
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


def live_section(listing: Listing) -> None:
    """Everything that changes while runs go; re-run on its own by the fragment."""
    counts = backend.status_counts()
    status_counts(counts)
    active = backend.load_runs(status=ACTIVE, limit=ACTIVE_SHOWN)
    if active:
        st.subheader("In progress")
        show_progress(active)
        more = sum(counts.get(status, 0) for status in ACTIVE) - len(active)
        if more > 0:
            st.caption(f"and {more:,} more queued or running (filter the table below by status to see them)")
    st.subheader("All runs")
    records = listing.records()
    total = backend.count_runs(**listing.filters())
    first = (listing.page - 1) * PAGE_SIZE
    st.caption(f"runs {first + 1:,}-{first + len(records):,} of {total:,}, newest first" if records
               else "No run matches these filters.")
    show_table(records)


def choose_listing() -> Listing:
    """The filters and the page, from the address (so a filtered page can be shared) and written back to it."""
    c1, c2, c3, c4 = st.columns([3, 2, 2, 1])
    chosen = {}
    for column, (name, label, options, key) in zip((c1, c2, c3), (
            ("status", "show statuses", list(STATUS_BADGES), "runs.filter"),
            ("method", "methods", backend.run_values("method"), "runs.method"),
            ("task", "tasks", backend.run_values("task"), "runs.task")), strict=True):
        follow_address(name, key, [item for item in items_from_query(name) if item in options])
        chosen[name] = column.multiselect(label, options, key=key, placeholder=f"all {label}",
                                          format_func=badge if name == "status" else str)
        keep_in_query(name, chosen[name], key)
    listing = Listing(tuple(chosen["status"]), tuple(chosen["method"]), tuple(chosen["task"]))
    pages = max(1, math.ceil(backend.count_runs(**listing.filters()) / PAGE_SIZE))
    wanted = str(st.query_params.get("page", "1"))
    follow_address("page", "runs.page", int(wanted) if wanted.isdigit() and int(wanted) > 0 else 1)
    st.session_state["runs.page"] = min(st.session_state["runs.page"], pages)  # filters may leave fewer pages
    page = int(c4.number_input(f"page (of {pages:,})", min_value=1, max_value=pages, key="runs.page"))
    keep_in_query("page", [page] if page > 1 else [], "runs.page")
    return replace(listing, page=page)


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
    counts = backend.status_counts()
    if not counts:
        st.info("No runs yet: start one on the Launch page.")
        st.page_link(PAGES["launch"], label="Launch a run", icon=":material/rocket_launch:")
        return
    listing = choose_listing()
    any_active = any(counts.get(status) for status in ACTIVE)
    live(live_section, REFRESH_SECONDS if any_active else None)(listing)
    st.subheader("Act on a run")
    st.caption("On the runs of the page shown above.")
    actions(listing.records())
    if counts.get(RunStatus.FAILED):
        with st.expander(f"Failures ({counts[RunStatus.FAILED]:,}; the newest {FAILURES_SHOWN} shown)"):
            for r in backend.load_runs(status=RunStatus.FAILED, limit=FAILURES_SHOWN):
                st.markdown(f"**{plain(run_label(r))}** · {plain(r.get('model'))}")
                st.code(r.get("error") or "no reason recorded", language=None)


main()
