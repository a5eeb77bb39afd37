"""Queue helpers for the command line and the dashboard: submit, sweep, cancel, retry, inspect and reconcile.

The store is the source of truth; Redis only carries work. A job's payload is a run id (the job reads the
validated config from the store), jobs are enqueued by dotted path with the JSON serializer and an explicit
timeout, and every status change is a conditional UPDATE (`WHERE status = <expected>`), so a worker, a cancel
and a reconcile racing on one run can never overwrite each other's outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from sqlalchemy import delete, func, select, update

from lamp_common.errors import LampError
from lamp_common.names import refuse_formula
from lamp_engine.config import RunConfig, grid_size
from lamp_engine.tuning import choose_lr, final_configs, search_configs, search_key, seed_groups
from store.accounts import Actor, authorize
from store.artifacts import TRAINER_STATE
from store.audit import Action, record_action
from store.db import session_scope
from store.files import (
    copy_run_file,
    forget_unused_blob,
    forget_unused_upload,
    is_upload,
    store_upload,
    upload_parts,
    uploads_named,
)
from store.models import MetricPoint, Run, RunFile, Sweep, utcnow
from store.queries import get_run
from store.settings import auto_retries, max_sweep_runs, os_user, predictions_per_minute, queue_quota
from store.status import ACTIVE, FINISHED, RETRYABLE, WITH_PROMPT, RunStatus
from worker.connection import embedded_running, redis_connection

log = logging.getLogger(__name__)

TRAIN_QUEUE = "lamp"
PREDICT_QUEUE = "lamp-predict"
DEFAULT_QUEUES = (PREDICT_QUEUE, TRAIN_QUEUE)  # a worker answers "try it" requests between trainings
TRACKERS_FIELD = "lamp_trackers"  # in a worker's registration: the trackers configured on it ("mlflow,wandb")
DEFAULT_JOB_TIMEOUT_S = int(os.environ.get("LAMP_JOB_TIMEOUT", 24 * 3600))
PREDICT_TIMEOUT_S = 600
RESULT_TTL_S = 7 * 24 * 3600
TRAIN_JOB = "worker.jobs.run_training"
PREDICT_JOB = "worker.jobs.run_prediction"
ENDED_JOB_STATUSES = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
RECONCILED = "reconcile: "  # the start of the error of a run that reconcile marked failed
DROPPED = "its job is in no queue (a worker took it and died before starting it)"  # reconcile queues it again
AUTO_RETRY_ACTOR = "reconcile"  # who the audit names for an automatic retry
QUOTA_LOCK_S = 60  # the longest a person's submission may hold their quota lock


def get_queue(name: str = TRAIN_QUEUE, connection: Redis | None = None) -> Queue:
    return Queue(name, connection=connection or redis_connection(), serializer=JSONSerializer)


def fetch_job(job_id: str, connection: Redis) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def _uploaded_data(config: RunConfig, submitted_by: str) -> RunConfig:
    """The config with each local dataset file it names stored in the store, so a worker on any host reads it.
    A path that does not exist here is kept as given (it may exist on the workers, e.g. a shared mount); a
    malformed upload reference is refused here rather than on the worker that would make it a path."""
    named = {name: value for name in ("train_file", "eval_file") if (value := getattr(config.data, name))}
    for value in named.values():
        if is_upload(value):
            upload_parts(value)
    local = {name: Path(value) for name, value in named.items() if not is_upload(value) and Path(value).is_file()}
    if not local:
        return config
    with session_scope() as session:
        stored = {name: store_upload(session, path.read_bytes(), path.name, submitted_by)
                  for name, path in local.items()}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **stored))


def _inherit_checkpoint(session: Any, parent_id: int, run: Run) -> None:
    """A retry starts from its parent's last stored trainer state: the same bytes, referenced again."""
    step = session.scalar(select(Run.checkpoint_step).where(Run.id == parent_id))
    if step is not None and copy_run_file(session, parent_id, run.id, TRAINER_STATE):
        run.checkpoint_step = step


@contextlib.contextmanager
def quota_counted(person: str) -> Iterator[None]:
    """Hold the person's quota lock (in Redis, shared by every dashboard and CLI) while their queued runs are
    counted and the new ones stored, so that parallel submissions cannot each see room for the same last slot."""
    lock = redis_connection().lock(f"lamp:quota:{person}", timeout=QUOTA_LOCK_S, blocking_timeout=QUOTA_LOCK_S)
    if not lock.acquire():
        raise LampError(f"queue quota: another submission by {person} is still being queued; try again")
    try:
        yield
    finally:
        with contextlib.suppress(LockError):  # expired while a huge sweep was stored: nothing left to release
            lock.release()


def check_quota(session: Any, person: str, adding: int) -> None:
    """Refuse, with one line, `adding` more queued runs that would take the person past their queue quota
    (called under quota_counted, in the transaction that stores them)."""
    quota = queue_quota()
    waiting = session.scalar(select(func.count()).select_from(Run)
                             .where(Run.submitted_by == person, Run.status == RunStatus.QUEUED)) or 0
    if waiting + adding > quota:
        raise LampError(f"queue quota: {person} has {waiting} queued runs and asks for {adding} more, over the quota "
                        f"of {quota}; wait for some to start or cancel some (LAMP_QUEUE_QUOTA sets the quota)")


def submit_run(config: RunConfig, sweep_id: int | None = None, parent_id: int | None = None,
               job_timeout: int = DEFAULT_JOB_TIMEOUT_S, submitted_by: str | None = None,
               within_quota: bool = True, lr_tuning: dict[str, Any] | None = None,
               trackers: dict[str, bool] | None = None) -> int:
    """Store a queued run and enqueue its job; returns the run id. `trackers`: trackers turned on or off for this
    run (`--mlflow`, `--no-wandb`); those not named follow the worker's variables.

    The job is enqueued inside the row's transaction, so a committed queued row always has its job in Redis
    (reconcile relies on that); a worker that dequeues it before the commit waits for the row to appear. A
    retry (parent_id) inherits its parent's last checkpoint in the same transaction, before a worker can start.
    A run admitted already (within_quota=False: an automatic retry, or one run of a sweep that was counted whole)
    skips the queue quota.
    """
    submitted_by = submitted_by or os_user()
    config = RunConfig.from_dict(config.to_dict())  # re-validate: the caller may have edited fields since
    refuse_formula(config.model, "model")  # listed in tables that are downloaded as CSV
    queue = get_queue(TRAIN_QUEUE)
    config = _uploaded_data(config, submitted_by)
    with quota_counted(submitted_by) if within_quota else contextlib.nullcontext():
        return _store_and_enqueue(queue, config, sweep_id, parent_id, job_timeout, submitted_by, within_quota,
                                  lr_tuning, trackers)


def _store_and_enqueue(queue: Queue, config: RunConfig, sweep_id: int | None, parent_id: int | None,
                       job_timeout: int, submitted_by: str, within_quota: bool,
                       lr_tuning: dict[str, Any] | None, trackers: dict[str, bool] | None = None) -> int:
    with session_scope() as session:
        if within_quota:
            check_quota(session, submitted_by, 1)
        run = Run(config=config.to_dict(), method=config.method.name, model=config.model, task=config.task,
                  status=RunStatus.QUEUED, created_at=utcnow(), sweep_id=sweep_id, parent_id=parent_id,
                  progress=0.0, step=0, stop_requested=False, submitted_by=submitted_by, lr_tuning=lr_tuning,
                  trackers=trackers or None)
        session.add(run)
        session.flush()
        if parent_id is not None:
            _inherit_checkpoint(session, parent_id, run)
        job = queue.enqueue_call(TRAIN_JOB, args=(run.id,), timeout=job_timeout, result_ttl=RESULT_TTL_S,
                                 failure_ttl=RESULT_TTL_S, description=f"lamp run {run.id}")
        run.job_id = job.id
        return run.id


def submit_sweep(configs: list[RunConfig], grid: dict[str, list[Any]], name: str,
                 submitted_by: str | None = None, trackers: dict[str, bool] | None = None) -> tuple[int, list[int]]:
    """Queue the runs of one sweep (expanded and validated by the caller); returns (sweep id, run ids).
    Nothing is queued when the sweep is over the size limit or the submitter's queue quota."""
    refuse_formula(name, "sweep name")
    grid_size(grid, max_sweep_runs())
    submitted_by = submitted_by or os_user()
    with quota_counted(submitted_by):  # also fails before storing a sweep that could not be queued
        with session_scope() as session:
            check_quota(session, submitted_by, len(configs))
            sweep = Sweep(name=name, grid={key: list(values) for key, values in grid.items()}, created_at=utcnow())
            session.add(sweep)
            session.flush()
            sweep_id = sweep.id
        return sweep_id, [submit_run(config, sweep_id=sweep_id, submitted_by=submitted_by, within_quota=False,
                                     trackers=trackers) for config in configs]


def submit_tuned(configs: list[RunConfig], grid: dict[str, list[Any]], name: str,
                 submitted_by: str | None = None) -> tuple[int, list[int]]:
    """Queue `configs` (one run or a sweep's) each at its own best learning rate: per group of configs that differ
    only by seed, the first seed's learning-rate search (selection-only runs, lamp_engine.tuning); the worker
    queues the group's seeds at the chosen rate once the search has ended (queue_tuned_finals). Returns (sweep id,
    search run ids): the search and its finals are one sweep, so Runs and Compare show them as one group."""
    refuse_formula(name, "sweep name")
    grid_size(grid, max_sweep_runs())
    searches = [(search_configs(group[0]), [config.train.seed for config in group]) for group in seed_groups(configs)]
    submitted_by = submitted_by or os_user()
    with quota_counted(submitted_by):  # the search is counted whole, as a sweep (its finals come later)
        with session_scope() as session:
            check_quota(session, submitted_by, sum(len(points) for points, _ in searches))
            sweep = Sweep(name=name, grid={**{key: list(values) for key, values in grid.items()}, "lr": ["tuned"]},
                          created_at=utcnow())
            session.add(sweep)
            session.flush()
            sweep_id = sweep.id
        return sweep_id, [submit_run(point, sweep_id=sweep_id, submitted_by=submitted_by, within_quota=False,
                                     lr_tuning={"role": "search", "key": search_key(point), "seeds": seeds})
                          for points, seeds in searches for point in points]


def queue_tuned_finals(run_id: int) -> list[int]:
    """After a search point ends (whatever its outcome): once every point of its search has ended, queue the
    group's final seeds at the rate with the best selection score, carrying the choice and the grid's scores.
    Once only: under a Redis lock per search, and not where its finals exist. Returns the finals' run ids."""
    with session_scope() as session:
        run = get_run(session, run_id)
        tuning, sweep_id = run.lr_tuning or {}, run.sweep_id
    if tuning.get("role") != "search":
        return []
    with redis_connection().lock(f"lamp:lr-tuning:{sweep_id}:{tuning['key']}", timeout=120, blocking_timeout=120):
        with session_scope() as session:
            group = [r for r in session.scalars(select(Run).where(Run.sweep_id == sweep_id,
                                                                  Run.lr_tuning.is_not(None)).order_by(Run.id))
                     if r.lr_tuning.get("key") == tuning["key"]]
            points = [r for r in group if r.lr_tuning["role"] == "search"]
            if any(r.status in ACTIVE for r in points) or any(r.lr_tuning["role"] == "final" for r in group):
                return []
            scores: dict[float, float | None] = {}
            for r in points:  # a point and its retries: the one that succeeded counts
                score = (r.best_metrics or {}).get(r.main_metric or "") if r.status == RunStatus.SUCCEEDED else None
                if score is not None or r.config["train"]["lr"] not in scores:
                    scores[r.config["train"]["lr"]] = score
            metric = next((r.main_metric for r in points if r.main_metric), "")
            searched = RunConfig.from_stored(points[0].config, f"run {points[0].id}")
            owner = points[0].submitted_by
        try:
            choice = choose_lr(scores, metric)
        except LampError as exc:
            log.warning("sweep %s: no final runs queued: %s", sweep_id, exc)
            return []
        return [submit_run(config, sweep_id=sweep_id, submitted_by=owner, within_quota=False,
                           lr_tuning={"role": "final", "key": tuning["key"], **choice.to_dict()})
                for config in final_configs(searched, choice, tuning["seeds"])]


def _set_status(run_id: int, expected: RunStatus, status: RunStatus, actor: Actor | None = None,
                action: Action | None = None, **values: Any) -> bool:
    """Move a run from `expected` to `status` only if nobody moved it first; True if this call did. The actor's
    action, if given, is recorded in the same transaction."""
    if status in FINISHED:
        values.setdefault("finished_at", utcnow())
    with session_scope() as session:
        result = session.execute(update(Run).where(Run.id == run_id, Run.status == expected)
                                 .values(status=status, **values))
        if result.rowcount == 1 and actor is not None and action is not None:
            record_action(session, run_id, action, actor.name)
        return result.rowcount == 1


def _authorized(run_id: int, actor: Actor, action: str) -> Run:
    """The run (detached), after checking that the actor may `action` it."""
    with session_scope() as session:
        run = get_run(session, run_id)
        authorize(actor, run, action)
        return run


def cancel_run(run_id: int, actor: Actor, force: bool = False) -> str:
    """Cancel a queued run, or ask a running one to stop (it saves its partial prompt); returns what happened.
    Only the run's owner or an admin may; the action is recorded with who did it.

    With force, a running run's work horse is also killed through RQ's stop command (for a loop that does not
    reach its next step, e.g. a hung evaluation), and the run is marked cancelled at once.
    """
    run = _authorized(run_id, actor, "cancel")
    job_id, status = run.job_id, run.status
    connection = redis_connection()
    if status == RunStatus.QUEUED and _set_status(run_id, RunStatus.QUEUED, RunStatus.CANCELLED, actor,
                                                  Action.CANCEL, error="cancelled before it started"):
        job = fetch_job(job_id, connection) if job_id else None
        if job is not None and job.get_status() not in ENDED_JOB_STATUSES:
            job.cancel()
        queue_tuned_finals(run_id)  # a search whose last open point this was goes on to its finals
        return str(RunStatus.CANCELLED)
    with session_scope() as session:
        flagged = session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                                  .values(stop_requested=True)).rowcount == 1
        if flagged and not force:
            record_action(session, run_id, Action.STOP, actor.name)
    if not flagged:
        with session_scope() as session:
            status = get_run(session, run_id).status
        raise LampError(f"run {run_id}: already {status}; only queued or running runs can be cancelled")
    if not force:
        return "stop requested"
    _set_status(run_id, RunStatus.RUNNING, RunStatus.CANCELLED, actor, Action.FORCE_STOP,
                error="stopped by force (lamp cancel --force)")
    with contextlib.suppress(InvalidJobOperation, NoSuchJobError):  # ended or vanished: cancelled either way
        send_stop_job_command(connection, job_id, serializer=JSONSerializer)
    return str(RunStatus.CANCELLED)


def worker_trackers(connection: Redis | None = None) -> list[str]:
    """The trackers configured on at least one live worker (each registers its own; the Launch form offers those).
    None while no Redis runs: asking never starts the embedded one."""
    if connection is None and not (os.environ.get("REDIS_URL") or embedded_running()):
        return []
    connection = connection or redis_connection()
    names: set[str] = set()
    for worker in Worker.all(connection=connection):
        field = connection.hget(worker.key, TRACKERS_FIELD)
        names.update(name for name in (field or b"").decode().split(",") if name)
    return sorted(names)


def retry_run(run_id: int, actor: Actor) -> int:
    """Queue a failed or cancelled run again as a new run linked to it (parent_id), continuing from its last
    checkpoint when it stored one; returns the new id. Only the run's owner or an admin may; the new run is the
    actor's (it spends their GPU time), and the retry is recorded on the old one."""
    run = _authorized(run_id, actor, "retry")
    if run.status not in RETRYABLE:
        raise LampError(f"run {run_id}: is {run.status}; only failed or cancelled runs can be retried")
    config = RunConfig.from_stored(run.config, f"run {run_id}")
    new_id = submit_run(config, sweep_id=run.sweep_id, parent_id=run_id, submitted_by=actor.name,
                        trackers=run.trackers, lr_tuning=run.lr_tuning)
    with session_scope() as session:
        record_action(session, run_id, Action.RETRY, actor.name, detail=f"as run {new_id}")
    return new_id


def delete_run(run_id: int, actor: Actor) -> None:
    """Delete a finished run's files and metric points, and the datasets it uploaded once no other run names them;
    its row stays, marked deleted and left out of every list, so its id is never reused and `lamp status` still
    tells who deleted it. Only its owner or an admin may."""
    run = _authorized(run_id, actor, "delete")
    if run.status not in FINISHED:
        raise LampError(f"run {run_id}: is {run.status}; cancel it first (`lamp cancel {run_id}`), then delete it")
    uploads = uploads_named(run.config)
    with session_scope() as session:
        blobs = set(session.scalars(select(RunFile.blob).where(RunFile.run_id == run_id, RunFile.blob.is_not(None))))
        session.execute(delete(RunFile).where(RunFile.run_id == run_id))
        session.execute(delete(MetricPoint).where(MetricPoint.run_id == run_id))
        session.execute(update(Run).where(Run.id == run_id).values(deleted_at=utcnow()))
        record_action(session, run_id, Action.DELETE, actor.name)
    for sha256 in blobs:
        forget_unused_blob(sha256)
    for sha256 in uploads:
        forget_unused_upload(sha256)


def queue_position(run_id: int) -> int | None:
    """1 for the next run a worker will take; None when the run is not waiting in the queue."""
    with session_scope() as session:
        run = get_run(session, run_id)
        job_id, status = run.job_id, run.status
    if status != RunStatus.QUEUED or not job_id:
        return None
    position = get_queue(TRAIN_QUEUE).get_job_position(job_id)
    return None if position is None else position + 1


def workers() -> list[dict[str, Any]]:
    """The live RQ workers: name, state, host, pid, queues, last heartbeat and the run each one trains."""
    connection = redis_connection()
    found = Worker.all(connection=connection)
    job_ids = {worker.name: worker.get_current_job_id() for worker in found}
    with session_scope() as session:
        wanted = [job_id for job_id in job_ids.values() if job_id]
        query = select(Run.job_id, Run.id).where(Run.job_id.in_(wanted))
        run_of_job = dict(session.execute(query).all()) if wanted else {}
    return [{"name": worker.name, "state": worker.get_state(), "hostname": worker.hostname, "pid": worker.pid,
             "queues": worker.queue_names(),
             "last_heartbeat": worker.last_heartbeat.isoformat() if worker.last_heartbeat else None,
             "run_id": run_of_job.get(job_ids[worker.name])} for worker in found]


def _job_ended_reason(job: Job) -> str:
    """'its RQ job ended as failed (last line of its error)', for a reconcile reason or a failed prediction."""
    status = job.get_status()
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    lines = [line.strip() for line in text.splitlines()]
    detail = [line for line in lines if line and not line.startswith("(Background on this error")][-1:]
    return f"its RQ job ended as {getattr(status, 'value', status)}" + (f" ({detail[0]})" if detail else "")


def _process_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _queued_problem(run: Any, connection: Redis) -> str | None:
    job = fetch_job(run.job_id, connection) if run.job_id else None
    if job is None:
        return "its job vanished from Redis before it started (Redis restarted or was flushed)"
    if job.get_status() in ENDED_JOB_STATUSES:
        return _job_ended_reason(job) + " before the run started"
    if _dropped(job, connection):
        return DROPPED
    return None


def _dropped(job: Job, connection: Redis) -> bool:
    """A job that says queued but that its queue no longer holds: a worker took it and died (or lost Redis) before
    it started it, so no worker will ever take it again."""
    return job.get_status() == JobStatus.QUEUED and get_queue(job.origin, connection).get_job_position(job.id) is None


def _requeue(run: Any, connection: Redis) -> None:
    """Put a dropped job back in its queue. Should the worker that took it be alive after all, the run is claimed
    once: the second copy finds it running and is skipped."""
    job = fetch_job(run.job_id, connection)
    if job is not None and _dropped(job, connection):
        get_queue(job.origin, connection).enqueue_job(job)
        log.warning("run %s: its job was in no queue (taken by a worker that died); queued it again", run.id)


def _running_problem(run: Any, connection: Redis) -> str | None:
    job = fetch_job(run.job_id, connection) if run.job_id else None
    if job is None:
        return "its job vanished from Redis while running (Redis restarted or was flushed)"
    if job.get_status() in ENDED_JOB_STATUSES:
        return _job_ended_reason(job) + " without recording an outcome (the work horse died)"
    if run.worker_host == socket.gethostname() and run.worker_pid and _process_gone(run.worker_pid):
        return f"its worker process {run.worker_pid} on {run.worker_host} died (killed or out of memory)"
    if run.worker_name and Worker.find_by_key(Worker.redis_worker_namespace_prefix + run.worker_name,
                                              connection=connection) is None:
        return f"its worker {run.worker_name} stopped sending heartbeats (stopped or died)"
    return None


def stuck_reason(run: Any, connection: Redis) -> str | None:
    """Why a queued or running run will never end by itself (its job vanished, its worker died), or None."""
    problem = _queued_problem if run.status == RunStatus.QUEUED else _running_problem
    return problem(run, connection)


def _clean_started_registries(connection: Redis, queue_names: Sequence[str]) -> None:
    """Let RQ move jobs whose work horse stopped heart-beating to its failed registry."""
    for name in queue_names:
        StartedJobRegistry(name, connection=connection, serializer=JSONSerializer).cleanup()


def _reconciled_in_a_row(session: Any, run_id: int) -> int:
    """How many runs in a row, ending with this one, reconcile marked failed (each the parent of the next)."""
    count, current = 0, run_id
    while current is not None:
        parent_id, error = session.execute(select(Run.parent_id, Run.error).where(Run.id == current)).one()
        if not (error or "").startswith(RECONCILED):
            break
        count, current = count + 1, parent_id
    return count


def _retry_reconciled(run_id: int) -> int | None:
    """Queue a run that reconcile marked failed again, as its retry (from its last checkpoint, on any worker),
    unless LAMP_AUTO_RETRY retries in a row were spent already; the new run's id, or None."""
    with session_scope() as session:
        if _reconciled_in_a_row(session, run_id) > auto_retries():
            return None
        run = get_run(session, run_id)
        stored, sweep_id, owner, tuning = run.config, run.sweep_id, run.submitted_by, run.lr_tuning
    try:
        config = RunConfig.from_stored(stored, f"run {run_id}")
    except LampError as exc:  # a config that today's checks refuse: the run stays failed, with its reason
        log.warning("run %s: not retried automatically (%s)", run_id, exc)
        return None
    new_id = submit_run(config, sweep_id=sweep_id, parent_id=run_id, submitted_by=owner, within_quota=False,
                        lr_tuning=tuning)  # a search point's retry stays a point of its search
    with session_scope() as session:
        record_action(session, run_id, Action.RETRY, AUTO_RETRY_ACTOR, detail=f"as run {new_id} (LAMP_AUTO_RETRY)")
    return new_id


def reconcile(connection: Redis | None = None) -> list[int]:
    """Mark failed, with a reason, every queued run whose job vanished and every running run whose worker died,
    and queue each again (LAMP_AUTO_RETRY times in a row at most), resuming from its checkpoint. A queued run whose
    job a dead worker took from the queue is not failed: its job goes back in the queue.

    Only queued and running rows are examined, and each is changed only if it still has the status it was
    read with, so finished runs and runs that progress meanwhile are never touched, and of two reconciles
    racing on one run only the one that marked it retries it. Returns the runs marked.
    """
    connection = connection or redis_connection()
    _clean_started_registries(connection, DEFAULT_QUEUES)
    with session_scope() as session:
        candidates = session.execute(
            select(Run.id, Run.status, Run.job_id, Run.worker_name, Run.worker_host, Run.worker_pid)
            .where(Run.status.in_(ACTIVE)).order_by(Run.id)).all()
    marked = []
    for run in candidates:
        reason = stuck_reason(run, connection)
        if reason == DROPPED:
            _requeue(run, connection)
        elif reason and _set_status(run.id, RunStatus(run.status), RunStatus.FAILED, error=RECONCILED + reason):
            try:
                retried = _retry_reconciled(run.id)
            except (LampError, RedisError):  # Redis went away: back as it was, for the next reconcile to retry
                _set_status(run.id, RunStatus.FAILED, RunStatus(run.status), error=None, finished_at=None)
                raise
            if retried is None:  # a search point that ends here may be its search's last
                queue_tuned_finals(run.id)
            marked.append(run.id)
    return marked


def _count_prediction(connection: Redis, person: str) -> None:
    """Count one prediction against the person's allowance for this minute (a Redis counter shared by every
    dashboard process), refusing it with one line beyond the allowance."""
    key = f"lamp:predictions:{person}:{int(time.time() // 60)}"
    count = connection.incr(key)
    connection.expire(key, 120)
    allowed = predictions_per_minute()
    if count > allowed:
        raise LampError(f"try it: {person} asked for more than {allowed} predictions this minute; wait a minute "
                        "(LAMP_PREDICTIONS_PER_MINUTE sets the allowance)")


def submit_prediction(run_id: int, text: str, requested_by: str | None = None) -> str:
    """Ask a worker to run a finished run's prompt on one text (the web process never loads a model); each person
    gets a few per minute, as workers serve predictions before training."""
    with session_scope() as session:
        run = get_run(session, run_id)
        if run.status not in WITH_PROMPT or not run.artifact_dir:
            raise LampError(f"run {run_id}: is {run.status}; only a finished run with a saved prompt can predict")
    if not text.strip():
        raise LampError("text: give a non-empty text to classify")
    connection = redis_connection()
    _count_prediction(connection, requested_by or os_user())
    job = get_queue(PREDICT_QUEUE, connection).enqueue_call(
        PREDICT_JOB, args=(run_id, [text]), timeout=PREDICT_TIMEOUT_S, result_ttl=3600, failure_ttl=3600,
        description=f"lamp predict with run {run_id}")
    return job.id


def prediction_result(job_id: str) -> dict[str, Any] | None:
    """None while pending, else the prediction job's outcome as RQ names it: {"status": "finished",
    "predictions": [...]} or {"status": "failed", "error": ...}."""
    job = fetch_job(job_id, redis_connection())
    if job is None:
        raise LampError(f"prediction {job_id}: unknown or expired; ask again")
    status = job.get_status()
    if status == JobStatus.FINISHED:
        return {"status": JobStatus.FINISHED.value, "predictions": job.return_value()}
    if status in ENDED_JOB_STATUSES:
        return {"status": JobStatus.FAILED.value, "error": _job_ended_reason(job)}
    return None
