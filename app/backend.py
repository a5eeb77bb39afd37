"""The dashboard's only door to the store and the queue: plain records out, queue actions in.

Views get run rows as dicts (detached from the session, cheap to pass to pure table and chart builders). Queue
calls that need Redis report an unreachable Redis as `QueueUnavailable`, so a page still shows the store's data.
Run files come from the store, whichever host wrote them; a file that cannot be read (corrupted, or kept on
another host's disk) is one line saying so, and the run's other files still load. Runs that ended before files
moved into the store are read from this host's LAMP_HOME.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from redis.exceptions import RedisError

from app import files
from app.downsample import CURVE_POINTS, thin_series
from app.forms import LaunchRequest
from lamp_common.errors import LampError
from store import queries
from store.accounts import Actor
from store.artifacts import ArtifactError, artifact_path
from store.audit import Recorded, actions_on
from store.db import ensure_schema, lamp_home, session_scope
from store.files import (
    RunFileError,
    StoredFile,
    read_run_file,
    read_run_folder,
    store_upload,
    stored_files,
    upload_suffix,
)
from store.mirrors import mirror_status
from store.models import Run
from store.status import RunStatus
from worker.connection import QueueUnavailable

RECORD_FIELDS = tuple(column.key for column in Run.__table__.columns)
USER_KEY = "lamp.user"  # the session's logged-in user
ADMIN_KEY = "lamp.admin"  # whether that user is an admin (app/login.py re-reads both on every page run)
PICKER_RUNS = 200  # the newest runs a run picker offers, besides the ones already chosen
PENDING_UPLOAD_S = 24 * 3600  # how long a file picked in the form waits for Launch
__all__ = ["QueueUnavailable"]
log = logging.getLogger(__name__)


def ensure_store() -> None:
    """Bring the store's schema to the latest migration (once per process and database)."""
    ensure_schema()


def record(run: Run) -> dict[str, Any]:
    return {name: getattr(run, name) for name in RECORD_FIELDS}


def load_runs(ids: list[int] | None = None, status: str | Iterable[str] | None = None, limit: int | None = None,
              method: Iterable[str] | None = None, task: Iterable[str] | None = None,
              offset: int = 0) -> list[dict[str, Any]]:
    """Run records newest first, filtered and paged in the database (`queries.list_runs`)."""
    with session_scope() as session:
        return [record(run) for run in queries.list_runs(session, limit=limit, status=status, ids=ids, method=method,
                                                         task=task, offset=offset)]


def count_runs(status: Iterable[str] | None = None, method: Iterable[str] | None = None,
               task: Iterable[str] | None = None) -> int:
    with session_scope() as session:
        return queries.count_runs(session, status=status, method=method, task=task)


def status_counts() -> dict[str, int]:
    with session_scope() as session:
        return queries.status_counts(session)


def run_values(column: str, status: Iterable[str] | None = None) -> list[str]:
    """The distinct methods, tasks or models of the runs (a filter's choices)."""
    with session_scope() as session:
        return queries.run_values(session, column, status=status)


def picker_runs(chosen: list[int], status: Iterable[str] | None = None, method: Iterable[str] | None = None,
                newest: int = PICKER_RUNS) -> list[dict[str, Any]]:
    """What a run picker offers: the `newest` runs of these statuses and methods, and the `chosen` ones (named by a
    shared address) wherever they are, newest first. A picker of every run of a large store would send thousands
    of labels to the browser on each page run."""
    records = {r["id"]: r for r in load_runs(status=status, method=method, limit=newest)}
    if chosen:
        records.update((r["id"], r) for r in load_runs(ids=chosen, status=status, method=method))
    return sorted(records.values(), key=lambda r: r["id"], reverse=True)


def load_run(run_id: int) -> dict[str, Any] | None:
    with session_scope() as session:
        try:
            return record(queries.get_run(session, run_id))
        except queries.UnknownRun:
            return None


def load_series(run_ids: list[int], key: str = "loss",
                limit: int | None = CURVE_POINTS) -> list[tuple[int, int, float]]:
    """(run id, step, value) of one metric, each run's line thinned to about `limit` points (None: every point)."""
    if not run_ids:
        return []
    with session_scope() as session:
        return thin_series([tuple(row) for row in queries.metric_series(session, run_ids, key=key)], limit)


def metric_keys(run_ids: list[int]) -> list[str]:
    """The metric names recorded for these runs (loss, lr and the evaluation metrics)."""
    if not run_ids:
        return []
    with session_scope() as session:
        return queries.metric_keys(session, run_ids)


def submitter() -> str | None:
    """Who is logged in to this dashboard session (app/login.py keeps it), recorded with the runs it submits;
    None outside a page run (the queue then records this process's user)."""
    import streamlit as st

    try:
        return st.session_state.get(USER_KEY)
    except Exception:  # noqa: BLE001 - no Streamlit session here (a test or a script calling the backend)
        return None


def actor() -> Actor:
    """Who acts in this dashboard session; LampError when no one is logged in, so a queue action never runs as
    nobody in particular."""
    import streamlit as st

    name = submitter()
    if not name:
        raise LampError("no one is logged in to this session; reload the page and log in")
    return Actor(name, admin=bool(st.session_state.get(ADMIN_KEY)))


def may_manage(record: dict[str, Any]) -> bool:
    """Whether this session's user may stop, cancel, retry or delete the run (its owner, or an admin)."""
    try:
        return actor().may_manage(record.get("submitted_by"))
    except LampError:
        return False


def run_actions(run_id: int) -> list[Recorded]:
    """Who stopped, cancelled, retried or deleted the run, and when, oldest first."""
    with session_scope() as session:
        return actions_on(session, run_id)


def _queue_call(function_name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a worker.queue helper, turning a Redis outage into one readable error."""
    from worker import queue

    try:
        return getattr(queue, function_name)(*args, **kwargs)
    except (RedisError, ConnectionError) as exc:
        raise QueueUnavailable(f"queue: lost Redis ({exc}); check that it runs (REDIS_URL), then reload") from None


def queue_positions(records: list[dict[str, Any]]) -> dict[int, int]:
    positions = {}
    for r in records:
        if r["status"] == RunStatus.QUEUED:
            position = _queue_call("queue_position", r["id"])
            if position is not None:
                positions[r["id"]] = position
    return positions


def workers_up() -> list[dict[str, Any]]:
    return _queue_call("workers")


def submit(request: LaunchRequest, name: str) -> list[int]:
    """Enqueue the request's runs (validated first): one run, or a sweep over its grid; with `tune_lr`, their
    learning-rate search as one sweep, whose finals the worker queues when it ends. Returns the run ids."""
    request = with_stored_uploads(request)
    if request.tune_lr:
        _, run_ids = _queue_call("submit_tuned", request.configs, request.grid, name, submitted_by=submitter())
        return list(run_ids)
    if not request.is_sweep:
        return [_queue_call("submit_run", request.configs[0], submitted_by=submitter(), trackers=request.trackers)]
    _, run_ids = _queue_call("submit_sweep", request.configs, request.grid, name, submitted_by=submitter(),
                             trackers=request.trackers)
    return list(run_ids)


def worker_trackers() -> list[str]:
    """The trackers configured on a live worker (each worker registers its own): the Launch form offers those."""
    return _queue_call("worker_trackers")


def tracker_mirrors(run_id: int) -> list[dict[str, Any]]:
    """Which trackers have the run and which are behind (store/mirrors.py)."""
    with session_scope() as session:
        return mirror_status(session, run_id)


def cancel(run_id: int) -> str:
    return _queue_call("cancel_run", run_id, actor())


def retry(run_id: int) -> int:
    return _queue_call("retry_run", run_id, actor())


def delete(run_id: int) -> bool:
    """True once the run is deleted (`ui.queue_call` gives None where it was refused)."""
    _queue_call("delete_run", run_id, actor())
    return True


def ask_prediction(run_id: int, text: str) -> str:
    return _queue_call("submit_prediction", run_id, text, requested_by=submitter())


def prediction(job_id: str) -> dict[str, Any] | None:
    return _queue_call("prediction_result", job_id)


def store_upload_file(content: bytes, name: str) -> str:
    """Keep an uploaded dataset in the store (once per content); returns the reference a run's config names, which
    any worker on any host fetches."""
    with session_scope() as session:
        return store_upload(session, content, name, uploaded_by=submitter())


def pending_uploads() -> Path:
    """Where this dashboard keeps files picked in the Launch form until Launch stores them."""
    return lamp_home() / "uploads" / "pending"


def keep_pending_upload(content: bytes, name: str) -> Path:
    """Keep a file picked in the form on this host only, under its content hash and its own (tidied) name, until
    Launch stores it (`with_stored_uploads`). Picked files untouched for PENDING_UPLOAD_S are removed first, so a
    file picked and never launched leaves nothing behind, here or in the store."""
    suffix = upload_suffix(name)  # refuses a kind of file the store would refuse
    forget_stale_pending_uploads()
    stem = re.sub(r"[^\w-]", "_", PurePosixPath(name).stem).strip("_") or "upload"
    path = pending_uploads() / hashlib.sha256(content).hexdigest() / f"{stem}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        path.write_bytes(content)
    os.utime(path.parent)  # picked again: fresh
    return path


def forget_stale_pending_uploads() -> None:
    if not pending_uploads().is_dir():
        return
    for folder in pending_uploads().iterdir():
        if time.time() - folder.stat().st_mtime > PENDING_UPLOAD_S:
            shutil.rmtree(folder, ignore_errors=True)


def with_stored_uploads(request: LaunchRequest) -> LaunchRequest:
    """The request naming, instead of each file pending on this host, its copy in the store (stored once, however
    many runs name it, by the person who launches), which a worker on any host fetches."""
    path = Path(request.values.get("train_file") or "")
    if not (path.is_file() and path.resolve().is_relative_to(pending_uploads().resolve())):
        return request
    return dataclasses.replace(request, values={**request.values,
                                                "train_file": store_upload_file(path.read_bytes(), path.name)})


@dataclass(frozen=True)
class RunEntry:
    """One entry of a run's folder as the run page offers it: a file, or a folder of files (downloaded as a zip)."""

    name: str
    size: int
    is_folder: bool
    elsewhere: str | None = None  # where it lies, when a worker's disk keeps it (above the store's size limit)


@dataclass(frozen=True)
class FileRead:
    """The bytes of a run file, or one line saying why they cannot be had here."""

    content: bytes | None = None
    problem: str | None = None


def _stored(run_id: int) -> list[StoredFile]:
    with session_scope() as session:
        return stored_files(session, run_id)


def run_entries(record: dict[str, Any]) -> list[RunEntry]:
    """The top-level files and folders the store holds for a run, in name order."""
    entries: dict[str, list[StoredFile]] = {}
    for file in _stored(record["id"]):
        entries.setdefault(file.top, []).append(file)
    return [RunEntry(name, sum(f.size for f in group), is_folder=group[0].name != name,
                     elsewhere=next((f.where(record["id"]) for f in group if not f.in_store), None))
            for name, group in entries.items()]


def _local_file(record: dict[str, Any], name: str) -> Path | None:
    """A file of a run that ended before files moved into the store, from this host's LAMP_HOME."""
    row = Run(id=record["id"], status=record["status"], artifact_dir=record.get("artifact_dir"))
    try:
        return artifact_path(row, name)
    except ArtifactError:
        return None


def fetch_run_file(record: dict[str, Any], name: str) -> FileRead:
    """One file of a run (`name` a folder: a zip of its files), checked against its recorded SHA-256."""
    run_id = record["id"]
    group = [f for f in _stored(run_id) if f.top == name]
    if not group:
        path = _local_file(record, name)
        return FileRead(None if path is None else files.zip_folder(path) if path.is_dir() else path.read_bytes())
    try:
        with session_scope() as session:
            if len(group) == 1 and group[0].name == name:
                return FileRead(read_run_file(session, run_id, name))
            return FileRead(files.zip_files(name, read_run_folder(session, run_id, name)))
    except RunFileError as exc:
        log.warning("%s", exc)
        return FileRead(problem=str(exc))


def read_run_bytes(record: dict[str, Any], name: str) -> bytes | None:
    """The content of one run file (a folder as a zip of its files), None when the run has none or it cannot be
    read here (`fetch_run_file` says why)."""
    return fetch_run_file(record, name).content


@lru_cache(maxsize=256)
def _parsed_json(run_id: int, name: str, sha256: str) -> dict[str, Any]:
    """A stored JSON file parsed once per content (the views re-run every few seconds)."""
    with session_scope() as session:
        return json.loads(read_run_file(session, run_id, name))


def read_run_json(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    """A run's JSON file, parsed; None when missing or unreadable (a corrupted file is logged in one line)."""
    stored = next((f for f in _stored(record["id"]) if f.name == name), None)
    if stored is None:
        path = _local_file(record, name)
        return files.read_json(path) if path else None
    try:
        return _parsed_json(record["id"], name, stored.sha256)
    except RunFileError as exc:
        log.warning("%s", exc)
    except ValueError:
        log.warning("run %s: %s is not valid JSON", record["id"], name)
    return None
