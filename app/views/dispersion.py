"""Dispersion: the paper's Figure 6. The prompt tokens of every selected run are projected together (one PCA or
one t-SNE fit, shared axes), so the runs' spreads compare on one picture; before or after training, and for LAMP
the pooled prompt the model reads or the unpooled C. The figures beside it are measured in the model's own space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from safetensors.numpy import load as load_tensors

from app import backend, charts, projection
from app.tables import dispersion_figures, run_label
from app.ui import pick_runs
from lamp_engine.methods import METHODS, MethodFamily
from store.status import WITH_PROMPT, RunStatus

PROJECTIONS = {"PCA (keeps distances' scale)": "pca", "t-SNE (keeps neighbourhoods)": "tsne"}
PHASES = {"after training": ("after",), "before training": ("before",), "before and after": ("before", "after")}
TOKENS = {"P' (pooled: what the model reads)": "prompt", "C (unpooled: l tokens)": "unpooled"}


def has_prompt_tokens(record: dict[str, Any]) -> bool:
    kind = METHODS.get(record.get("method") or "")
    return kind is not None and kind.family is MethodFamily.SOFT_PROMPT


def default_pick(records: list[dict[str, Any]]) -> list[int]:
    """The newest finished run of each of PT and LAMP, so the page opens on the paper's comparison."""
    picks = []
    for method in ("pt", "lamp"):
        newest = next((r["id"] for r in records
                       if r.get("method") == method and r["status"] == RunStatus.SUCCEEDED), None)
        if newest is not None:
            picks.append(newest)
    return picks


def token_sets(records: list[dict[str, Any]], phases: tuple[str, ...], tokens: str
               ) -> tuple[dict[tuple[str, str, str], np.ndarray], list[int]]:
    """{(run, method, phase): matrix} of the runs that kept their tokens, and the ids of those that did not."""
    sets, missing = {}, []
    for record in records:
        data = backend.read_run_bytes(record, "tokens.safetensors")
        if data is None:
            missing.append(record["id"])
            continue
        matrices = load_tensors(data)
        for phase in phases:
            name = f"{phase}.{tokens}" if f"{phase}.{tokens}" in matrices else f"{phase}.prompt"
            sets[(run_label(record), str(record.get("method")).upper(), phase)] = matrices[name]
    return sets, missing


@st.cache_data(max_entries=32, show_spinner="projecting the tokens of every run together…")
def joint_points(run_ids: tuple[int, ...], phases: tuple[str, ...], tokens: str,
                 method: str) -> tuple[pd.DataFrame, list[int]]:
    """The projection of these runs' tokens, cached: a t-SNE fit takes seconds, and it never changes."""
    sets, missing = token_sets(backend.load_runs(ids=list(run_ids)), phases, tokens)
    return projection.project_jointly(sets, method), missing


def main() -> None:
    st.title("Dispersion of prompt tokens")
    finished = backend.load_runs(status=WITH_PROMPT)
    with_tokens = [r for r in finished if has_prompt_tokens(r)]
    without = sorted({r["method"] for r in finished if not has_prompt_tokens(r)})
    if without:
        st.caption(f"Not offered: {', '.join(without)} runs have no prompt tokens, so dispersion does not apply.")
    if not with_tokens:
        st.info("No finished prompt runs yet: dispersion is measured when a run ends.")
        return
    selected = pick_runs("runs", with_tokens, "runs", default=default_pick(with_tokens), key="dispersion.runs")
    c1, c2, c3 = st.columns(3)
    method = PROJECTIONS[c1.radio("projection", list(PROJECTIONS), key="dispersion.projection")]
    phases = PHASES[c2.radio("tokens", list(PHASES), key="dispersion.phase")]
    tokens = TOKENS[c3.radio("LAMP's tokens", list(TOKENS), key="dispersion.tokens",
                             help="other methods have no pooling: their prompt is shown either way")]
    if not selected:
        st.info("Pick runs (a PT and a LAMP run show the paper's contrast).")
        return
    try:
        points, missing = joint_points(tuple(sorted(selected)), phases, tokens, method)
    except ValueError as exc:  # runs of different hidden sizes
        st.error(str(exc))
        return
    if missing:
        st.warning("Run " + ", ".join(f"#{i}" for i in missing) + " kept no token matrices (trained before they "
                   "were kept, or still writing its files); the picture leaves it out.")
    if not points.empty:
        st.altair_chart(charts.joint_dispersion_chart(points, method), width="stretch")
        st.caption("Spread in the picture (mean pairwise distance of the projected points):")
        st.dataframe(projection.spread(points), hide_index=True)
    figures = [(r, data) for r in finished if r["id"] in selected
               for data in [backend.read_run_json(r, "dispersion.json")] if data]
    if figures:
        st.subheader("Dispersion figures in the model's space")
        st.caption("Mean pairwise distance and covariance trace of the tokens, before and after training.")
        table = dispersion_figures(figures, tokens)
        st.dataframe(table, hide_index=True, width="stretch")
        st.altair_chart(charts.dispersion_figure_chart(table), width="stretch")


main()
