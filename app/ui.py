"""Small Streamlit helpers the views share: run pickers kept in the URL, page links and queue warnings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from app.backend import QueueUnavailable
from app.tables import badge, run_label
from lamp_engine.errors import LampError

PAGES = {
    "launch": "views/launch.py",
    "runs": "views/runs.py",
    "compare": "views/compare.py",
    "dispersion": "views/dispersion.py",
    "run": "views/run.py",
}


def ids_from_query(name: str) -> list[int]:
    """Run ids kept in the URL as ?name=3,5,8 (unknown or malformed items are dropped)."""
    raw = st.query_params.get(name, "")
    return [int(item) for item in str(raw).split(",") if item.strip().isdigit()]


def keep_ids_in_query(name: str, ids: list[int]) -> None:
    value = ",".join(str(i) for i in ids)
    if st.query_params.get(name, "") != value:
        if value:
            st.query_params[name] = value
        else:
            del st.query_params[name]


def describe(record: dict[str, Any]) -> str:
    return f"{run_label(record)} · {record.get('model')} · {badge(record['status'])}"


def pick_runs(label: str, records: list[dict[str, Any]], query_name: str, default: list[int],
              key: str) -> list[int]:
    """A multiselect of runs whose selection lives in the URL, so a comparison can be bookmarked and shared."""
    by_id = {r["id"]: r for r in records}
    chosen = [i for i in ids_from_query(query_name) if i in by_id] or [i for i in default if i in by_id]
    selected = st.multiselect(label, options=list(by_id), default=chosen, key=key,
                              format_func=lambda i: describe(by_id[i]))
    keep_ids_in_query(query_name, selected)
    return selected


def queue_call(action: Callable[[], Any], fallback: Any = None) -> Any:
    """Run a queue action; an unreachable Redis shows as one warning, a refused action (e.g. retrying a run
    that succeeded) as one error, instead of a traceback."""
    try:
        return action()
    except QueueUnavailable as exc:
        st.warning(str(exc))
    except LampError as exc:
        st.error(str(exc))
    return fallback


def link_to_run(run_id: int, label: str | None = None) -> None:
    st.page_link(PAGES["run"], label=label or f"Open run #{run_id}", icon=":material/search:",
                 query_params={"id": str(run_id)})
