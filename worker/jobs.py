"""The functions RQ runs in a worker's work horse (enqueued by dotted path, payload = run id).

The engine (and so torch) is imported inside the job functions only: the worker's parent process and the web
app never load it, and each job's forked horse releases its GPU memory when it exits.

Hosts share only Redis and the database: a run's uploaded dataset is fetched from the store, its checkpoints and
files go into the store, and its local folder (LAMP_HOME/runs/ID) is a cache. While a run trains, a write the
store cannot take now (a restart) waits for the next one; the run's last writes are retried with back-off, so
a blink of the database loses no metric point and fails no run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError

from lamp_common.errors import LampError
from lamp_common.result import RunResult
from lamp_engine.config import RunConfig, default_data_dir
from lamp_engine.errors import TaskError, disk_writes
from store.artifacts import TRAINER_STATE, run_dir
from store.db import first_line, lamp_home, session_scope, unreachable, with_retries
from store.files import fetch_upload, is_upload, materialise_run, store_run_folder
from store.models import EVAL_PREFIX, MetricPoint, Run, finite, result_columns, utcnow
from store.queries import get_run
from store.settings import host_name
from store.status import RunStatus
from worker.checkpoints import Checkpointer, CheckpointPolicy, restore_checkpoint
from worker.trackers import finish_mirror, start_mirror

log = logging.getLogger(__name__)

CLAIM_WAIT_S = 30.0  # how long a job waits for its row when it was dequeued before the submitter committed
FLUSH_EVERY_S = 0.5  # metric points and progress are written in batches at most this often
POLL_STOP_EVERY_S = 0.5
DATA_FIELDS = ("train_file", "eval_file")  # config fields that may name an uploaded dataset


def _claim(run_id: int) -> dict[str, Any] | None:
    """Move the run from queued to running; its config, or None if it was cancelled or reconciled meanwhile."""
    job = get_current_job()
    deadline = time.monotonic() + CLAIM_WAIT_S

    def attempt() -> tuple[bool, dict[str, Any] | None]:
        with session_scope() as session:
            claimed = session.execute(
                update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED).values(
                    status=RunStatus.RUNNING, started_at=utcnow(), artifact_dir=f"runs/{run_id}",
                    worker_name=job.worker_name if job else None, worker_host=socket.gethostname(),
                    worker_pid=os.getpid())).rowcount == 1
            return claimed, session.scalar(select(Run.config).where(Run.id == run_id))

    while True:
        claimed, config = with_retries(attempt, f"run {run_id}: claim")
        if claimed:
            return config
        if config is not None or time.monotonic() > deadline:
            log.warning("run %s: not queued any more (or never stored); skipping it", run_id)
            return None
        time.sleep(0.2)


class StoreReporter:
    """The engine's callbacks: stream costs, metric points, progress and the live step time into the store, and
    poll the stop flag.

    Writes are batched (at most every FLUSH_EVERY_S, and at each evaluation) so a fast loop costs one small
    transaction per batch; every write is conditional on the run still running, and a run that is no longer
    running (force-cancelled, reconciled) is told to stop. While the store is unreachable the batch grows and
    training goes on; `finish_streaming` waits for the store (with back-off) so every point arrives.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.points: list[dict[str, Any]] = []
        self.costs: dict[str, Any] = {}
        self.step = 0
        self.total_steps: int | None = None
        self.step_seconds: list[float] = []
        self.last_flush = self.last_poll = time.monotonic()
        self.stop = False

    def on_start(self, costs: dict[str, Any]) -> None:
        """The costs known once the model is built, so the dashboard shows them while the run trains."""
        self.total_steps = costs.get("total_steps")
        self.costs = {k: v for k, v in costs.items() if k in RunResult.column_names()}
        self.flush()

    def on_step(self, step: int, total_steps: int, values: dict[str, float], seconds: float) -> None:
        self.step, self.total_steps = step, total_steps
        self.step_seconds.append(seconds)
        self._add(step, values, prefix="")
        if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._add(step, metrics, prefix=EVAL_PREFIX)
        self.flush()

    def should_stop(self) -> bool:
        if not self.stop and time.monotonic() - self.last_poll >= POLL_STOP_EVERY_S:
            self.last_poll = time.monotonic()
            try:
                with session_scope() as session:
                    row = session.execute(select(Run.status, Run.stop_requested)
                                          .where(Run.id == self.run_id)).one()
            except DBAPIError as exc:
                if not unreachable(exc):
                    raise
                return self.stop  # asked again at the next poll
            self.stop = row.stop_requested or row.status != RunStatus.RUNNING
        return self.stop

    def _add(self, step: int, values: dict[str, float], prefix: str) -> None:
        self.points += [{"run_id": self.run_id, "step": step, "key": prefix + key, "value": float(value)}
                        for key, value in values.items() if finite(value)]

    def _write(self) -> None:
        progress = self.step / self.total_steps if self.total_steps else 0.0
        with session_scope() as session:
            if self.points:
                session.execute(insert(MetricPoint), self.points)
            session.execute(update(Run).where(Run.id == self.run_id, Run.status == RunStatus.RUNNING).values(
                **{**self.costs, "step": self.step, "total_steps": self.total_steps,
                   "progress": min(progress, 1.0),
                   "step_seconds_median": statistics.median(self.step_seconds) if self.step_seconds else None}))

    def flush(self, wait: bool = False) -> None:
        """Write the pending points and progress. While training (no wait) an unreachable store keeps them
        pending for the next flush instead of holding the training loop; at the end it is waited for."""
        try:
            with_retries(self._write, f"run {self.run_id}: metric points", None if wait else 0)
        except DBAPIError as exc:
            if wait or not unreachable(exc):
                raise
            log.warning("run %s: %d metric points wait for the store (%s)", self.run_id, len(self.points),
                        first_line(exc))
        else:
            self.points, self.costs = [], {}
        self.last_flush = time.monotonic()
        self._share_progress()

    def _share_progress(self) -> None:
        """Progress in the RQ job's meta too (for RQ's own tools); Redis being away only skips it."""
        job = get_current_job()
        if job is None:
            return
        job.meta.update(run_id=self.run_id, step=self.step, total_steps=self.total_steps,
                        progress=self.step / self.total_steps if self.total_steps else 0.0)
        try:
            job.save_meta()
        except RedisError as exc:
            log.warning("run %s: progress not shared with Redis (%s)", self.run_id, exc)

    def finish_streaming(self, history: dict[str, list[dict[str, Any]]]) -> None:
        """Store every point still pending and any point of the engine's final history that was not streamed
        (e.g. a last evaluation, or the steps a resumed run inherited), waiting for the store if need be."""
        self.flush(wait=True)

        def known_points() -> set[tuple[str, int]]:
            with session_scope() as session:
                return set(session.execute(select(MetricPoint.key, MetricPoint.step)
                                           .where(MetricPoint.run_id == self.run_id)).tuples())

        known = with_retries(known_points, f"run {self.run_id}: metric points")
        for kind, prefix in (("train", ""), ("eval", EVAL_PREFIX)):
            for entry in history.get(kind, []):
                values = {key: value for key, value in entry.items()
                          if key != "step" and (prefix + key, entry["step"]) not in known}
                self._add(entry["step"], values, prefix)
        self.flush(wait=True)


def _finish(run_id: int, status: RunStatus, **values: Any) -> None:
    def finish() -> bool:
        with session_scope() as session:
            return session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING).values(
                status=status, finished_at=utcnow(), **values)).rowcount == 1

    if not with_retries(finish, f"run {run_id}: outcome"):
        log.warning("run %s: no longer running (cancelled or reconciled meanwhile); outcome %s not recorded",
                    run_id, status)


def _store_files(run_id: int, folder: Path, step: int | None = None) -> None:
    """Put the run folder's files into the store (waiting for it if need be): from now on any host reads them.
    `step` is the step of the trainer state the folder holds (a retry of a stopped run continues from it)."""
    if not folder.is_dir():
        return
    stored = with_retries(lambda: store_run_folder(run_id, folder), f"run {run_id}: files")
    log.info("run %s: stored %d files", run_id, len(stored))
    if step is not None and TRAINER_STATE in stored:
        def record_step() -> None:
            with session_scope() as session:
                session.execute(update(Run).where(Run.id == run_id).values(checkpoint_step=step))

        with_retries(record_step, f"run {run_id}: files")


def _record_result(run_id: int, result: RunResult, reporter: StoreReporter, folder: Path) -> RunStatus:
    reporter.finish_streaming(result.history)
    _store_files(run_id, folder, result.steps)
    status = RunStatus.from_outcome(result.status)
    if status is RunStatus.CANCELLED:
        _finish(run_id, status, error=f"stopped on request at step {result.steps}; partial prompt saved",
                **result_columns(result))
    else:
        _finish(run_id, status, **result_columns(result))
    return status


def _fail(run_id: int, folder: Path | None, error: str) -> None:
    """Record the failure; whatever the run folder holds (a resumed run's state) is stored first."""
    if folder is not None:
        try:
            _store_files(run_id, folder)
        except (DBAPIError, OSError, LampError) as exc:
            log.warning("run %s: its partial files were not stored (%s)", run_id, first_line(exc))
    _finish(run_id, RunStatus.FAILED, error=error)


def _local_data(config: RunConfig) -> RunConfig:
    """The config with each uploaded dataset it names fetched from the store into this host's cache."""
    wanted = {name: getattr(config.data, name) for name in DATA_FIELDS if is_upload(getattr(config.data, name))}
    if not wanted:
        return config

    def fetch() -> dict[str, str]:
        with session_scope() as session:
            return {name: str(fetch_upload(session, ref, lamp_home() / "uploads")) for name, ref in wanted.items()}

    return dataclasses.replace(config, data=dataclasses.replace(config.data, **with_retries(fetch, "uploads")))


def run_folder(run_id: int) -> Path:
    """The run's local folder (LAMP_HOME/runs/ID), waiting for the store if it is away (a restart right after the
    run was claimed failed the run)."""
    def find() -> Path:
        with session_scope() as session:
            return run_dir(get_run(session, run_id))

    return with_retries(find, f"run {run_id}: folder")


def _where(exc: LampError, data_dir: str | None) -> str:
    """The engine's message, and for a task whose data is missing, which host and folder looked for it."""
    if not isinstance(exc, TaskError):
        return str(exc)
    return f"{exc} (worker host {host_name()}, data folder {data_dir or 'none: set LAMP_DATA_DIR there'})"


def run_training(run_id: int) -> dict[str, Any]:
    """Train one stored run in this process and record its outcome; returns {"run_id", "status"} for RQ.

    The task files come from this machine: a run that names no data folder uses this worker's default. A run
    with a stored checkpoint (a retry inherits its parent's) resumes from it.
    """
    config = _claim(run_id)
    if config is None:
        return {"run_id": run_id, "status": "skipped"}
    reporter, folder, data_dir, mirror = StoreReporter(run_id), None, default_data_dir(), None
    try:
        from lamp_engine.train import Callbacks, train

        policy = CheckpointPolicy.from_env()
        with disk_writes(lamp_home()):  # the upload, the checkpoint and the files it fetches are written here too
            folder = run_folder(run_id)
            folder.parent.mkdir(parents=True, exist_ok=True)
            mirror = start_mirror(run_id, folder)  # the trackers, sent to from a thread of their own
            run_config = _local_data(RunConfig.from_stored(config, f"run {run_id}").with_data_dir(data_dir))
            data_dir = run_config.data.data_dir  # the run's own folder, when it names one
            resumed = restore_checkpoint(run_id, folder)
            checkpoints = Checkpointer(run_id, folder, policy, start_step=resumed or 0)
            result = train(run_config, folder, resume=resumed is not None, callbacks=Callbacks(
                on_start=reporter.on_start, on_step=reporter.on_step, on_eval=reporter.on_eval,
                should_stop=reporter.should_stop, checkpoint_due=checkpoints.due, on_checkpoint=checkpoints.store))
            return {"run_id": run_id, "status": str(_record_result(run_id, result, reporter, folder))}
    except LampError as exc:  # the user's input (a bad file, a diverged loss): the message says what to do
        _fail(run_id, folder, _where(exc, data_dir))
    except Exception as exc:
        _fail(run_id, folder, f"{type(exc).__name__}: {exc}")
        raise  # RQ keeps the traceback in its failed registry
    finally:
        finish_mirror(run_id, mirror)
        _continue_search(run_id)
    return {"run_id": run_id, "status": str(RunStatus.FAILED)}


def _continue_search(run_id: int) -> None:
    """A learning-rate search point that ended may be its search's last: then its final runs are queued."""
    from worker.queue import queue_tuned_finals

    try:
        finals = queue_tuned_finals(run_id)
    except (DBAPIError, RedisError, LampError) as exc:  # the run's own outcome is recorded; say why no finals
        log.error("run %s: its search's final runs were not queued: %s", run_id, first_line(exc))
        return
    if finals:
        log.info("run %s: its learning-rate search ended; queued final runs %s", run_id, finals)


def run_prediction(run_id: int, texts: list[str]) -> list[dict[str, Any]]:
    """Run a finished run's prompt on a few texts (the dashboard's "try it" box), from the stored files put into
    this worker's cache."""
    from lamp_engine.predict import predict

    with session_scope() as session:
        folder = run_dir(get_run(session, run_id))
    problems = materialise_run(run_id, folder, skip=[TRAINER_STATE])
    if problems:
        raise LampError("; ".join(problems))
    return predict(folder, texts)
