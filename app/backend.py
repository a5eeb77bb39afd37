"""The dashboard's only door to the store and the queue: plain records out, queue actions in.

Views get run rows as dicts (detached from the session, cheap to pass to pure table and chart builders). Queue
calls that need Redis report an unreachable Redis as `QueueUnavailable`, so a page still shows the store's data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from app.forms import LaunchRequest
from store import queries
from store.artifacts import ArtifactError, artifact_path
from store.db import ensure_schema, session_scope
from store.models import Run
from worker.connection import QueueUnavailable

RECORD_FIELDS = tuple(column.key for column in Run.__table__.columns)
__all__ = ["QueueUnavailable"]


def ensure_store() -> None:
    """Bring the store's schema to the latest migration (once per process and database)."""
    ensure_schema()


def record(run: Run) -> dict[str, Any]:
    return {name: getattr(run, name) for name in RECORD_FIELDS}


def load_runs(ids: list[int] | None = None, status: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [record(run) for run in queries.list_runs(session, limit=limit, status=status, ids=ids)]


def load_run(run_id: int) -> dict[str, Any] | None:
    with session_scope() as session:
        try:
            return record(queries.get_run(session, run_id))
        except queries.UnknownRun:
            return None


def load_series(run_ids: list[int], key: str = "loss") -> list[tuple[int, int, float]]:
    if not run_ids:
        return []
    with session_scope() as session:
        return [tuple(row) for row in queries.metric_series(session, run_ids, key=key)]


def metric_keys(run_ids: list[int]) -> list[str]:
    """The metric names recorded for these runs (loss, lr and the evaluation metrics)."""
    if not run_ids:
        return []
    with session_scope() as session:
        return queries.metric_keys(session, run_ids)


def _queue_call(function_name: str, *args: Any) -> Any:
    """Call a worker.queue helper, turning a Redis outage into one readable error."""
    from worker import queue

    try:
        return getattr(queue, function_name)(*args)
    except (RedisError, ConnectionError) as exc:
        raise QueueUnavailable(f"queue: lost Redis ({exc}); check that it runs (REDIS_URL), then reload") from None


def queue_positions(records: list[dict[str, Any]]) -> dict[int, int]:
    positions = {}
    for r in records:
        if r["status"] == "queued":
            position = _queue_call("queue_position", r["id"])
            if position is not None:
                positions[r["id"]] = position
    return positions


def workers_up() -> list[dict[str, Any]]:
    return _queue_call("workers")


def submit(request: LaunchRequest, name: str) -> list[int]:
    """Enqueue the request's runs (validated first): one run, or a sweep over its grid. Returns the run ids."""
    configs = request.configs()
    if not request.is_sweep:
        return [_queue_call("submit_run", configs[0])]
    _, run_ids = _queue_call("submit_sweep", request.base_config(), request.grid, name)
    return list(run_ids)


def cancel(run_id: int) -> str:
    return _queue_call("cancel_run", run_id)


def retry(run_id: int) -> int:
    return _queue_call("retry_run", run_id)


def ask_prediction(run_id: int, text: str) -> str:
    return _queue_call("submit_prediction", run_id, text)


def prediction(job_id: str) -> dict[str, Any] | None:
    return _queue_call("prediction_result", job_id)


def run_file(record: dict[str, Any], name: str) -> Path | None:
    """A recorded file of a run (result.json, prompt.safetensors, peft, dispersion.json), None if not there."""
    row = Run(id=record["id"], status=record["status"], artifact_dir=record.get("artifact_dir"))
    try:
        return artifact_path(row, name)
    except ArtifactError:
        return None
