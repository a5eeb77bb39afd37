"""Dispersion, in two pictures. "PT vs LAMP" is the paper's Figure 6: a PT run's and a LAMP run's trained prompt
tokens on one model and task, one t-SNE fit (PCA a choice), PT blue ("before"), LAMP red ("after"); the page opens
on it when such a pair exists. "Before vs after training" projects the tokens of any selected runs before and/or
after training together. For LAMP, the pooled prompt the model reads or the unpooled C; the figures below the
pictures are measured in the model's own space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from safetensors.numpy import load as load_tensors

from app import backend, charts, figure6, projection
from app.backend import PICKER_RUNS
from app.tables import dispersion_figures, run_label
from app.ui import describe, follow_address, ids_from_query, pick_runs
from lamp_engine.methods import METHODS, MethodFamily
from store.status import WITH_PROMPT, RunStatus

MODES = {"PT vs LAMP (the paper's Figure 6)": "figure6", "before vs after training": "training"}
PROJECTIONS = {"PCA (keeps distances' scale)": "pca", "t-SNE (keeps neighbourhoods)": "tsne"}
PHASES = {"after training": ("after",), "before training": ("before",), "before and after": ("before", "after")}
TOKENS = {"P' (pooled: what the model reads)": "prompt", "C (unpooled: l tokens)": "unpooled"}
SOFT_PROMPTS = tuple(name for name, kind in METHODS.items() if kind.family is MethodFamily.SOFT_PROMPT)


def default_pick(records: list[dict[str, Any]]) -> list[int]:
    """The newest finished run of each of PT and LAMP, the before-and-after-training picture's first runs."""
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


def choose_mode(pair: tuple[int, int] | None) -> str:
    """Figure 6 when a PT and a LAMP run of one model and task exist, unless the address names the mode (?mode=)
    or runs to project (?runs=, a shared before-and-after link)."""
    wanted = st.query_params.get("mode") or ("training" if ids_from_query("runs") or not pair else "figure6")
    labels = list(MODES)
    follow_address("mode", "dispersion.mode", next((label for label in labels if MODES[label] == wanted), labels[0]))
    return MODES[st.radio("picture", labels, key="dispersion.mode", horizontal=True)]


def show_model_space_figures(records: list[dict[str, Any]], ids: list[int], tokens: str) -> None:
    figures = [(r, data) for r in records if r["id"] in ids
               for data in [backend.read_run_json(r, "dispersion.json")] if data]
    if figures:
        st.subheader("Dispersion figures in the model's space")
        st.caption("Mean pairwise distance and covariance trace of the tokens, before and after training.")
        table = dispersion_figures(figures, tokens)
        st.dataframe(table, hide_index=True, width="stretch")
        st.altair_chart(charts.dispersion_figure_chart(table), width="stretch")


@st.cache_data(max_entries=32, show_spinner="projecting PT's and LAMP's tokens together…")
def figure6_picture(pt_id: int, lamp_id: int, tokens: str, method: str) -> tuple[pd.DataFrame, str] | None:
    """Figure 6's points and caption, cached (a t-SNE fit takes seconds); None when a run kept no tokens."""
    sides = {}
    for record in backend.load_runs(ids=[pt_id, lamp_id]):
        data = backend.read_run_bytes(record, "tokens.safetensors")
        if data is None:
            return None
        sides[record["method"]] = figure6.Side(record, load_tensors(data))
    pt, lamp = sides["pt"], sides["lamp"]
    return figure6.points(pt, lamp, tokens, method), figure6.caption(pt, lamp, tokens, method)


def show_figure6(records: list[dict[str, Any]], pair: tuple[int, int] | None) -> None:
    """PT (blue, before) vs LAMP (red, after) on one model and task, as the paper's Figure 6."""
    pts = [r for r in records if r.get("method") == "pt" and r["status"] == RunStatus.SUCCEEDED]
    if not pair:
        st.info("Figure 6 needs a finished PT run and a finished LAMP run of one model and task.")
        return
    by_id = {r["id"]: r for r in records}
    c1, c2 = st.columns(2)
    pt_ids = [r["id"] for r in pts]
    pt_id = c1.selectbox("PT run (blue, before)", pt_ids, index=pt_ids.index(pair[0]), key="dispersion.fig6.pt",
                         format_func=lambda i: describe(by_id[i]))
    lamp_ids = [r["id"] for r in figure6.partners(records, by_id[pt_id])]
    if not lamp_ids:
        st.info(f"No finished LAMP run on {by_id[pt_id].get('model')} / {by_id[pt_id].get('task')}: pick another "
                "PT run.")
        return
    lamp_id = c2.selectbox("LAMP run of the same model and task (red, after)", lamp_ids,
                           index=lamp_ids.index(pair[1]) if pair[1] in lamp_ids else 0, key="dispersion.fig6.lamp",
                           format_func=lambda i: describe(by_id[i]))
    c1, c2 = st.columns(2)
    method = PROJECTIONS[c1.radio("projection", list(PROJECTIONS), index=1, key="dispersion.fig6.projection",
                                  help="t-SNE, as the paper's Figure 1; PCA keeps distances' scale")]
    tokens = TOKENS[c2.radio("LAMP's tokens", list(TOKENS), key="dispersion.fig6.tokens")]
    picture = figure6_picture(pt_id, lamp_id, tokens, method)
    if picture is None:
        st.warning("One of the runs kept no token matrices (trained before they were kept, or still writing its "
                   "files).")
        return
    points, caption = picture
    st.altair_chart(charts.figure6_chart(points, method, figure6.COLOURS).interactive(), width="stretch")
    st.caption(caption)
    st.dataframe(projection.spread(points), hide_index=True)
    show_model_space_figures(records, [pt_id, lamp_id], tokens)


def show_training(with_tokens: list[dict[str, Any]]) -> None:
    """The tokens of any selected runs, before and/or after training, in one projection."""
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
    show_model_space_figures(with_tokens, selected, tokens)


def main() -> None:
    st.title("Dispersion of prompt tokens")
    with_tokens = backend.picker_runs(ids_from_query("runs"), status=WITH_PROMPT, method=SOFT_PROMPTS)
    without = [m for m in backend.run_values("method", status=WITH_PROMPT) if m not in SOFT_PROMPTS]
    if without:
        st.caption(f"Not offered: {', '.join(without)} runs have no prompt tokens, so dispersion does not apply.")
    if not with_tokens:
        st.info("No finished prompt runs yet: dispersion is measured when a run ends.")
        return
    if len(with_tokens) >= PICKER_RUNS:
        st.caption(f"The newest {PICKER_RUNS} finished prompt runs are offered, and any named in the address.")
    pair = figure6.newest_pair(with_tokens)
    if choose_mode(pair) == "figure6":
        show_figure6(with_tokens, pair)
    else:
        show_training(with_tokens)

main()
