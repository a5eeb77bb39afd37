"""Altair charts as pure functions of DataFrames, so tests can inspect their specs without a browser."""

from __future__ import annotations

import altair as alt
import pandas as pd

CURVE_COLUMNS = ["run", "step", "value"]


def curves_frame(series: list[tuple[int, int, float]], labels: dict[int, str]) -> pd.DataFrame:
    """(run id, step, value) triples from the store -> a long frame with each run's readable label."""
    frame = pd.DataFrame(series, columns=["run_id", "step", "value"])
    frame["run"] = frame["run_id"].map(labels).fillna(frame["run_id"].map(lambda i: f"#{i}"))
    return frame[CURVE_COLUMNS]


def curves_chart(frame: pd.DataFrame, metric: str = "loss", height: int = 260) -> alt.Chart:
    """Training curves of one or more runs overlaid, one colour per run."""
    return (
        alt.Chart(frame, title=f"{metric} per step")
        .mark_line(point=len(frame) <= 60)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="run"),
            tooltip=["run:N", "step:Q", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=height)
        .interactive()
    )


def dispersion_chart(points: pd.DataFrame, projection: str) -> alt.FacetChart:
    """The paper's Figure 1/6: prompt tokens projected to 2-D, before (top) and after (bottom) training,
    one column per method (PT next to LAMP), coloured by run."""
    base = alt.Chart(points).mark_circle(size=60, opacity=0.75).encode(
        x=alt.X("x:Q", title=f"{projection.upper()} 1", scale=alt.Scale(zero=False)),
        y=alt.Y("y:Q", title=f"{projection.upper()} 2", scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="run"),
        tooltip=["run:N", "phase:N", "token:Q", alt.Tooltip("x:Q", format=".3f"), alt.Tooltip("y:Q", format=".3f")],
    ).properties(width=280, height=240)
    return base.facet(
        row=alt.Row("phase:N", title=None, sort=["before", "after"]),
        column=alt.Column("method:N", title=None, sort=["PT", "LAMP"]),
    ).resolve_scale(x="independent", y="independent")


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
