"""The dashboard's server: `python -m app.serve run app/main.py <options>`, Streamlit's own command line after the
views' libraries are imported.

Streamlit imports a page's modules on the first script run, so without this the first visitor waited ~3 s for
pandas, Altair, SQLAlchemy, scikit-learn and the engine's registries (`lamp bench dashboard`'s first load: 4.2 s
on 2 idle cores). `lamp up`, the benchmark and the browser tests all start the dashboard this way.
"""

from __future__ import annotations

import sys


def preload() -> None:
    """Import what every view imports, and the projections' scikit-learn, before the first page is asked for."""
    import sklearn.decomposition  # noqa: F401
    import sklearn.manifold  # noqa: F401

    import app.backend  # noqa: F401
    import app.charts  # noqa: F401
    import app.figure6  # noqa: F401
    import app.forms  # noqa: F401
    import app.login  # noqa: F401
    import app.projection  # noqa: F401
    import app.tables  # noqa: F401
    import lamp_engine.tasks  # noqa: F401
    import worker.queue  # noqa: F401


if __name__ == "__main__":
    preload()
    from streamlit.web.cli import main

    sys.argv[0] = "streamlit"
    sys.exit(main())
