"""Engines, sessions and schema upgrades for the run store.

SQLite under LAMP_HOME by default (WAL so readers never block the worker's writes, a busy timeout so concurrent
writers wait instead of failing), PostgreSQL or any SQLAlchemy URL through DATABASE_URL. Every process that
opens the store upgrades it to the newest Alembic revision first (MLflow's pattern: migrations ship with the
product and run from code), under a lock, so concurrent first starts do not race to create tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import logging
import os
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from lamp_common.errors import LampError
from lamp_common.urls import hide_password
from store.settings import store_patience_s

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_MIGRATION_LOCK_ID = 0x1A4D0  # any constant shared by every process of this product

RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0
SCHEMA_ERRORS = ("no such table", "no such column", "syntax error")  # SQLite's OperationalErrors that are bugs

_engines: dict[str, Engine] = {}
_upgraded: set[str] = set()
log = logging.getLogger(__name__)
T = TypeVar("T")


class StoreError(LampError):
    """The store cannot be opened: a bad or unreachable DATABASE_URL."""


def lamp_home() -> Path:
    """The data folder (LAMP_HOME, default ~/.lamp) holding the SQLite file, run folders and embedded Redis."""
    return Path(os.environ.get("LAMP_HOME") or Path.home() / ".lamp").expanduser()


def database_url() -> str:
    """DATABASE_URL if set, else the SQLite file LAMP_HOME/lamp.db."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    home = lamp_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'lamp.db'}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """One engine per URL per process (a forked child gets fresh connections, see _forget_connections_after_fork)."""
    url = url or database_url()
    if url not in _engines:
        try:
            parsed = make_url(url)
            is_sqlite = parsed.get_backend_name() == "sqlite"
            if is_sqlite and parsed.database and parsed.database != ":memory:":
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, pool_pre_ping=not is_sqlite)
        except (ArgumentError, ValueError) as exc:
            raise StoreError(hide_password(f"DATABASE_URL: {url!r} is not a database URL ({exc}); use e.g. "
                                           "postgresql+psycopg://user@host/db, or unset it for SQLite", url)) from None
        except ImportError as exc:
            raise StoreError(hide_password(f"DATABASE_URL: no driver for {url!r} ({exc}); "
                                           "install it or use postgresql+psycopg://", url)) from None
        if is_sqlite:
            _configure_sqlite(engine)
        _engines[url] = engine
    return _engines[url]


def _forget_connections_after_fork() -> None:
    """A forked RQ work horse must not share its parent's open database connections."""
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_connections_after_fork)


@cache
def migrations_dir() -> Path:
    """The Alembic scripts: the package store.migrations where the project is installed (a wheel holds the folder
    under that name, an editable install maps it there), else the checkout's top-level migrations/ folder (code run
    from a source tree, or an editable install made before the folder moved out of store/)."""
    with contextlib.suppress(ModuleNotFoundError):
        installed = Path(str(importlib.resources.files("store.migrations")))
        if (installed / "env.py").is_file():  # not a namespace left by an old store/migrations/__pycache__
            return installed
    return Path(__file__).resolve().parents[1] / "migrations"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def _head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return ScriptDirectory.from_config(config).get_current_head()


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise upgrades of one SQLite file across processes (held until the upgrade has committed)."""
    if engine.url.get_backend_name() != "sqlite" or engine.url.database in (None, "", ":memory:"):
        yield
        return
    with open(f"{engine.url.database}.migrate.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _lock_for_transaction(connection: Connection) -> None:
    """On PostgreSQL, an advisory lock held until this transaction ends serialises concurrent upgrades."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK_ID})


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: newest) from code; cheap when it is already there."""
    engine = get_engine(url)
    plain = engine.url.render_as_string(hide_password=False)
    try:
        with _sqlite_file_lock(engine), engine.begin() as connection:
            _lock_for_transaction(connection)
            current = MigrationContext.configure(connection).get_current_revision()
            target = _head_revision() if revision == "head" else revision
            if current != target:
                command.upgrade(_alembic_config(connection), revision)
    except CommandError as exc:
        raise StoreError(hide_password(f"DATABASE_URL: the store's schema cannot be upgraded ({exc}); it may come "
                                       "from a newer LAMP Studio: upgrade this installation or point DATABASE_URL "
                                       "elsewhere", plain)) from None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise StoreError(hide_password(f"DATABASE_URL: cannot open the store at {plain} ({reason}); check the URL "
                                       "and that the server runs, or unset it for SQLite", plain)) from None


def ensure_schema(url: str | None = None) -> None:
    """Upgrade once per process and URL, so every entry point can call it freely."""
    url = url or database_url()
    if url not in _upgraded:
        upgrade(url)
        _upgraded.add(url)


@cache
def _session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextlib.contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error; the schema is upgraded on first use."""
    url = url or database_url()
    ensure_schema(url)
    session = _session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose(url: str | None = None) -> None:
    """Close one engine's connections and forget it (tests drop their databases afterwards)."""
    url = url or database_url()
    engine = _engines.pop(url, None)
    _upgraded.discard(url)
    _session_factory.cache_clear()
    if engine is not None:
        engine.dispose()


def unreachable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (a restart, a dropped connection, a locked SQLite
    file), which is worth waiting out, rather than a bug in the statement."""
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return isinstance(exc, DBAPIError) and exc.connection_invalidated
    return not any(text in str(exc.orig) for text in SCHEMA_ERRORS)


def first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def with_retries(action: Callable[[], T], what: str, patience_s: float | None = None) -> T:
    """Run a store action, retrying with back-off while the database is unreachable, for up to `patience_s`
    (default LAMP_STORE_PATIENCE_S), so a database restart delays a worker's writes instead of failing its run."""
    deadline = time.monotonic() + (store_patience_s() if patience_s is None else patience_s)
    delay = RETRY_FIRST_DELAY_S
    while True:
        try:
            return action()
        except DBAPIError as exc:
            if not unreachable(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: the store is unreachable (%s); retrying in %.1f s", what, first_line(exc), delay)
        time.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_DELAY_S)
