"""Altair charts as pure functions of DataFrames, so tests can inspect their specs without a browser."""

from __future__ import annotations

import altair as alt
import pandas as pd

CURVE_COLUMNS = ["run", "step", "value"]


def curves_frame(series: list[tuple[int, int, float]], labels: dict[int, str],
                 seconds: list[tuple[int, int, float]] | None = None) -> pd.DataFrame:
    """(run id, step, value) triples from the store -> a long frame with each run's readable label; with
    `seconds` (run id, step, seconds of training), only the points that have a time, with it."""
    frame = pd.DataFrame(series, columns=["run_id", "step", "value"])
    frame["run"] = frame["run_id"].map(labels).fillna(frame["run_id"].map(lambda i: f"#{i}"))
    if seconds is None:
        return frame[CURVE_COLUMNS]
    times = pd.DataFrame(seconds, columns=["run_id", "step", "seconds"])
    return frame.merge(times, on=["run_id", "step"])[[*CURVE_COLUMNS, "seconds"]]


def curves_chart(frame: pd.DataFrame, metric: str = "loss", height: int = 260, x: str = "step") -> alt.Chart:
    """Training curves of one or more runs overlaid, one colour per run; against steps, or seconds of training."""
    title = "seconds of training" if x == "seconds" else "step"
    return (
        alt.Chart(frame, title=f"{metric} per {'second of training' if x == 'seconds' else 'step'}")
        .mark_line(point=len(frame) <= 60)
        .encode(
            x=alt.X(f"{x}:Q", title=title),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run"),
            tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=height)
        .interactive()
    )


def projected_points(points: pd.DataFrame, projection: str, title: str) -> alt.Chart:
    """Prompt tokens of one joint projection (`x`, `y`) on shared axes: what both Dispersion modes draw, each
    adding its own colours; `title` may name the projection as {name}."""
    name = {"pca": "PCA", "tsne": "t-SNE"}[projection]
    return (
        alt.Chart(points, title=title.format(name=name))
        .mark_point(size=60, opacity=0.8, filled=True)
        .encode(x=alt.X("x:Q", title=f"{name} 1", scale=alt.Scale(zero=False)),
                y=alt.Y("y:Q", title=f"{name} 2", scale=alt.Scale(zero=False)))
        .properties(height=460)
    )


def joint_dispersion_chart(points: pd.DataFrame, projection: str) -> alt.Chart:
    """Before and after training: the prompt tokens of every run in one projection, one colour per run and one
    shape per phase, so the spread of the points is what the eye compares."""
    return (
        projected_points(points, projection, "prompt tokens, one {name} fit over all runs (shared axes)")
        .encode(color=alt.Color("run:N", title="run"),
                shape=alt.Shape("phase:N", title="phase", sort=["before", "after"]),
                tooltip=["run:N", "phase:N", "token:Q", alt.Tooltip("x:Q", format=".3f"),
                         alt.Tooltip("y:Q", format=".3f")])
        .interactive()
    )


def figure6_chart(points: pd.DataFrame, projection: str, colours: dict[str, str]) -> alt.Chart:
    """The paper's Figure 6 as the paper draws it: two sets of prompt tokens in one projection, coloured as
    `colours` maps each set's label (PT's "before" in blue, LAMP's "after" in red), on shared axes."""
    return projected_points(points, projection, "prompt tokens after training, one {name} fit over both runs").encode(
        color=alt.Color("run:N", title=None, sort=list(colours),
                        scale=alt.Scale(domain=list(colours), range=list(colours.values())),
                        legend=alt.Legend(orient="top")),
        tooltip=["run:N", "token:Q", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".3f")])


def ratio_chart(ratios: pd.DataFrame) -> alt.Chart:
    """Relative change of each cost figure to the reference run (negative = cheaper), grouped by quantity."""
    return (
        alt.Chart(ratios, title="change relative to the reference run (%)")
        .mark_bar()
        .encode(
            y=alt.Y("quantity:N", title=None),
            yOffset="run:N",
            x=alt.X("change %:Q", title="% vs reference"),
            color=alt.Color("run:N", title="run"),
            tooltip=["run:N", "quantity:N", alt.Tooltip("change %:Q", format="+.1f")],
        )
        .properties(height=alt.Step(14))
    )


def dispersion_figure_chart(figures: pd.DataFrame) -> alt.Chart:
    """Mean pairwise distance of the prompt tokens before and after training, one pair of bars per run."""
    long = figures.melt(id_vars=["run", "method"],
                        value_vars=["mean pairwise distance before", "mean pairwise distance after"],
                        var_name="phase", value_name="distance")
    long["phase"] = long["phase"].str.removeprefix("mean pairwise distance ")
    return (
        alt.Chart(long, title="mean pairwise distance of prompt tokens")
        .mark_bar()
        .encode(
            x=alt.X("run:N", title=None),
            xOffset=alt.XOffset("phase:N", sort=["before", "after"]),
            y=alt.Y("distance:Q", title="distance"),
            color=alt.Color("phase:N", sort=["before", "after"], title="phase"),
            tooltip=["run:N", "phase:N", alt.Tooltip("distance:Q", format=".4f")],
        )
        .properties(height=260)
    )
