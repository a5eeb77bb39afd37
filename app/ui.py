"""Small Streamlit helpers the views share: run pickers kept in the URL, page links, queue warnings, text shown
as written, and live sections that stop drawing once their session has logged out."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import streamlit as st

from app.backend import USER_KEY, QueueUnavailable
from app.tables import badge, run_label
from lamp_engine.errors import LampError

PAGES = {
    "launch": "views/launch.py",
    "runs": "views/runs.py",
    "compare": "views/compare.py",
    "dispersion": "views/dispersion.py",
    "run": "views/run.py",
}


def items_from_query(name: str) -> list[str]:
    """The items of a list kept in the URL as ?name=a,b,c (empty items dropped)."""
    return [item.strip() for item in str(st.query_params.get(name, "")).split(",") if item.strip()]


def ids_from_query(name: str) -> list[int]:
    """Run ids kept in the URL as ?name=3,5,8 (unknown or malformed items are dropped)."""
    return [int(item) for item in items_from_query(name) if item.isdigit()]


def follow_address(name: str, key: str, value: Any, options: list[Any] | None = None) -> None:
    """Give the widget `key` the `value` that the address's ?name= asks for, on the widget's first run and whenever
    the address changed outside the page (Back, a link, a switch to a shared address); otherwise the widget keeps
    what the user picked, unless that is no longer among `options` (then the first option). Streamlit keeps a keyed
    widget's state over a new default, so without this a view showed its old selection under a new address. The
    widget is then made without a default."""
    address = str(st.query_params.get(name, ""))
    if key not in st.session_state or st.session_state.get(f"{key}.address") != address:
        st.session_state[key] = value
    st.session_state[f"{key}.address"] = address
    if options is not None and st.session_state[key] not in options:
        st.session_state[key] = options[0]


def keep_in_query(name: str, items: list[Any], key: str | None = None) -> None:
    """Write a selection to the URL as ?name=a,b,c (none: the parameter goes), so a view can be bookmarked; `key`:
    the widget it came from, whose address is then this one (see `follow_address`)."""
    value = ",".join(str(i) for i in items)
    if st.query_params.get(name, "") != value:
        if value:
            st.query_params[name] = value
        else:
            del st.query_params[name]
    if key is not None:
        st.session_state[f"{key}.address"] = value


def describe(record: dict[str, Any]) -> str:
    return f"{run_label(record)} · {record.get('model')} · {badge(record['status'])}"


def pick_runs(label: str, records: list[dict[str, Any]], query_name: str, default: list[int],
              key: str) -> list[int]:
    """A multiselect of runs whose selection lives in the URL, so a comparison can be bookmarked and shared."""
    by_id = {r["id"]: r for r in records}
    chosen = [i for i in ids_from_query(query_name) if i in by_id] or [i for i in default if i in by_id]
    follow_address(query_name, key, chosen)
    selected = st.multiselect(label, options=list(by_id), key=key, format_func=lambda i: describe(by_id[i]))
    keep_in_query(query_name, selected, key)
    return selected


MARKDOWN_SYNTAX = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def plain(text: Any) -> str:
    """`text` for st.markdown, st.caption, st.error and their kind, shown exactly as written: every ASCII
    punctuation character is escaped (CommonMark allows it for all of them), so a model name, a login name or an
    error text from someone else can never become a link, an image, emphasis or a heading in another's view."""
    return MARKDOWN_SYNTAX.sub(r"\\\1", str(text))


def live(draw: Callable[..., None], every: float | None) -> Callable[..., None]:
    """`draw` as a fragment re-run every `every` seconds (None: only with the page). A fragment re-runs without the
    page's login check, and Streamlit keeps it after a page that stopped at the login form; so it draws nothing
    once its session has no logged-in user."""

    @functools.wraps(draw)
    def logged_in_only(*args: Any, **kwargs: Any) -> None:
        if st.session_state.get(USER_KEY):
            draw(*args, **kwargs)

    return st.fragment(run_every=every)(logged_in_only)


def queue_call(action: Callable[[], Any], fallback: Any = None) -> Any:
    """Run a queue action; an unreachable Redis shows as one warning, a refused action (e.g. retrying a run
    that succeeded) as one error, instead of a traceback."""
    try:
        return action()
    except QueueUnavailable as exc:
        st.warning(plain(exc))
    except LampError as exc:
        st.error(plain(exc))
    return fallback


def link_to_run(run_id: int, label: str | None = None) -> None:
    st.page_link(PAGES["run"], label=label or f"Open run #{run_id}", icon=":material/search:",
                 query_params={"id": str(run_id)})
