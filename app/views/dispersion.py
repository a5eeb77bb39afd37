"""Dispersion: the paper's Figure 1/6 made interactive. Prompt tokens projected to 2-D (PCA or t-SNE) before and
after training, PT next to LAMP, coloured by run, with each run's dispersion figures."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import backend, charts, files
from app.tables import dispersion_figures, dispersion_points
from app.ui import pick_runs

PROJECTIONS = {"PCA": "pca", "t-SNE": "tsne"}


def with_dispersion(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(record, parsed dispersion.json) of the runs that wrote one."""
    pairs = []
    for r in records:
        path = backend.run_file(r, "dispersion.json")
        data = files.read_json(path) if path else None
        if data:
            pairs.append((r, data))
    return pairs


def default_pick(records: list[dict[str, Any]]) -> list[int]:
    """The newest finished run of each of PT and LAMP, so the page opens on the paper's comparison."""
    picks = []
    for method in ("pt", "lamp"):
        newest = next((r["id"] for r in records if r.get("method") == method and r["status"] == "succeeded"), None)
        if newest is not None:
            picks.append(newest)
    return picks


def main() -> None:
    st.title("Dispersion of prompt tokens")
    finished = backend.load_runs(status=["succeeded", "cancelled"])
    if not finished:
        st.info("No finished runs yet: dispersion is measured when a run ends.")
        return
    selected = pick_runs("runs", finished, "runs", default=default_pick(finished), key="dispersion.runs")
    label = st.radio("projection", list(PROJECTIONS), horizontal=True, key="dispersion.projection")
    pairs = with_dispersion([r for r in finished if r["id"] in selected])
    missing = sorted(set(selected) - {r["id"] for r, _ in pairs})
    if missing:
        st.warning("No dispersion.json for run " + ", ".join(f"#{i}" for i in missing) + " (not written yet).")
    if not pairs:
        st.info("Pick runs that finished (a PT and a LAMP run show the paper's contrast).")
        return
    points = dispersion_points(pairs, PROJECTIONS[label])
    if points.empty:
        st.info(f"These runs recorded no {label} projection.")
    else:
        st.altair_chart(charts.dispersion_chart(points, PROJECTIONS[label]))
    st.subheader("Dispersion figures")
    st.caption("Mean pairwise distance and covariance trace of the prompt tokens, before and after training.")
    figures = dispersion_figures(pairs)
    st.dataframe(figures, hide_index=True, width="stretch")
    st.altair_chart(charts.dispersion_figure_chart(figures), width="stretch")


main()
