"""Alembic environment for the run store, driven from code (store.db.upgrade) or the alembic command line.

From code, store.db hands over an open connection (config.attributes["connection"]) that already holds the
migration lock; from the command line, the URL comes from DATABASE_URL or the SQLite default.
`render_as_batch=True` lets the same migration scripts alter tables on SQLite, which cannot ALTER most things.
"""

from __future__ import annotations

from alembic import context

from store.models import Base


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from store.db import get_engine

    with get_engine().begin() as own_connection:
        _run(own_connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
