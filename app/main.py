"""LAMP Studio dashboard entry point: `streamlit run app/main.py` (or `lamp up`, which also starts a worker).

One st.navigation page per file in app/views/ (not app/pages/: that folder switches Streamlit to its legacy
multipage mode). Nothing is drawn before the login its bind address requires (app/login.py); the store's schema
is upgraded once per process and database before any page reads it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/, not the project, on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import backend  # noqa: E402
from app.login import require_login  # noqa: E402
from lamp_engine.errors import LampError  # noqa: E402


def main() -> None:
    st.set_page_config(page_title="LAMP Studio", page_icon=":material/lightbulb:", layout="wide")
    require_login()
    try:
        backend.ensure_store()
    except LampError as exc:  # a bad or unreachable DATABASE_URL: one line saying what to do
        st.error(str(exc))
        st.stop()
    pages = [
        st.Page("views/runs.py", title="Runs", icon=":material/list:", default=True),
        st.Page("views/launch.py", title="Launch", icon=":material/rocket_launch:", url_path="launch"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
        st.Page("views/dispersion.py", title="Dispersion", icon=":material/scatter_plot:", url_path="dispersion"),
        st.Page("views/run.py", title="Run", icon=":material/search:", url_path="run"),
    ]
    st.navigation(pages).run()


main()
