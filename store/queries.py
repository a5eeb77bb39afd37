"""Read helpers shared by the command line and the dashboard."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from lamp_common.errors import LampError
from store.models import MetricPoint, Run, Sweep


class UnknownRun(LampError):
    """A run id that the store does not hold."""


def _filtered(query: Select, status: str | Iterable[str] | None = None, ids: Iterable[int] | None = None,
              method: Iterable[str] | None = None, task: Iterable[str] | None = None) -> Select:
    """The query limited to runs not deleted, of these statuses, ids, methods and tasks (None: any)."""
    query = query.where(Run.deleted_at.is_(None))
    if status is not None:
        query = query.where(Run.status.in_([status] if isinstance(status, str) else list(status)))
    for column, values in ((Run.id, ids), (Run.method, method), (Run.task, task)):
        if values is not None:
            query = query.where(column.in_(list(values)))
    return query


def list_runs(session: Session, limit: int | None = None, status: str | Iterable[str] | None = None,
              ids: Iterable[int] | None = None, method: Iterable[str] | None = None,
              task: Iterable[str] | None = None, offset: int = 0) -> list[Run]:
    """Runs, newest first, optionally filtered by status (one or several), ids, methods and tasks, and paged by
    `limit` and `offset` (in the database, so a page of a large store costs what the page holds); deleted runs are
    left out."""
    query = _filtered(select(Run), status, ids, method, task).order_by(Run.id.desc()).offset(offset or None)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def count_runs(session: Session, status: str | Iterable[str] | None = None, method: Iterable[str] | None = None,
               task: Iterable[str] | None = None) -> int:
    """How many runs `list_runs` with these filters holds in all pages."""
    return session.scalar(_filtered(select(func.count(Run.id)), status, method=method, task=task)) or 0


def status_counts(session: Session) -> dict[str, int]:
    """{status: number of runs}, deleted runs left out."""
    query = _filtered(select(Run.status, func.count(Run.id))).group_by(Run.status)
    return {status: count for status, count in session.execute(query)}


def run_values(session: Session, column: str, status: str | Iterable[str] | None = None) -> list[str]:
    """The distinct values of one run column ("method", "task", "model") among runs of these statuses, sorted
    (a filter's choices)."""
    field = getattr(Run, column)
    query = _filtered(select(field).distinct(), status).where(field.is_not(None)).order_by(field)
    return list(session.scalars(query))


def get_run(session: Session, run_id: int, deleted_too: bool = False) -> Run:
    """The run with this id, or UnknownRun naming it (never None, so callers cannot forget the check). A deleted
    run is unknown too, except to `deleted_too` (its record, for `lamp status`)."""
    run = session.get(Run, run_id)
    if run is None:
        raise UnknownRun(f"run {run_id}: no such run in the store; `lamp runs` lists the existing ones")
    if run.deleted_at is not None and not deleted_too:
        raise UnknownRun(f"run {run_id}: deleted at {run.deleted_at:%Y-%m-%d %H:%M:%S} UTC; `lamp status "
                         f"{run_id}` shows who deleted it")
    return run


def metric_series(session: Session, run_ids: Iterable[int], key: str = "loss") -> list[tuple[int, int, float]]:
    """(run id, step, value) of one metric for several runs, ordered by run and step, for plotting."""
    query = (select(MetricPoint.run_id, MetricPoint.step, MetricPoint.value)
             .where(MetricPoint.run_id.in_(list(run_ids)), MetricPoint.key == key)
             .order_by(MetricPoint.run_id, MetricPoint.step, MetricPoint.id))
    return [(run_id, step, value) for run_id, step, value in session.execute(query)]


def metric_keys(session: Session, run_ids: Iterable[int]) -> list[str]:
    """The metric names recorded for these runs (for a chart's metric picker)."""
    query = select(MetricPoint.key).where(MetricPoint.run_id.in_(list(run_ids))).distinct().order_by(MetricPoint.key)
    return list(session.scalars(query))


def sweeps(session: Session) -> list[Sweep]:
    """All sweeps, newest first."""
    return list(session.scalars(select(Sweep).order_by(Sweep.id.desc())))
