"""`lamp migrate`: bring the store's schema to the newest Alembic revision (the compose file's one-shot step).

Every process upgrades the store on start anyway; this command lets a deployment do it once, before the
dashboard and the workers start, and fail loudly there if the database is unreachable.
"""

from __future__ import annotations

import sys

from sqlalchemy.engine import make_url

from lamp_common.errors import LampError
from store.db import database_url, upgrade


def main(argv: list[str]) -> int:
    if argv[1:] in (["-h"], ["--help"]):
        print("usage: lamp migrate\n\nUpgrade the store at DATABASE_URL (default: SQLite under LAMP_HOME) to the "
              "newest schema.")
        return 0
    if argv[1:]:
        print(f"lamp migrate: unexpected arguments {' '.join(argv[1:])} (see --help)", file=sys.stderr)
        return 2
    try:
        upgrade()
    except LampError as exc:
        print(f"lamp migrate: error: {exc}", file=sys.stderr)
        return 2
    where = make_url(database_url()).render_as_string(hide_password=True)
    print(f"store at {where} is at the newest schema")
    return 0
