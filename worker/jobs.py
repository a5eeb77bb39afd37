"""The functions RQ runs in a worker's work horse (enqueued by dotted path, payload = run id).

The engine (and so torch) is imported inside the job functions only: the worker's parent process and the web
app never load it, and each job's forked horse releases its GPU memory when it exits.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any

from rq import get_current_job
from sqlalchemy import insert, select, update

from lamp_engine.config import RunConfig
from lamp_engine.errors import LampError, TrainingDiverged
from store.artifacts import run_dir
from store.db import session_scope
from store.models import EVAL_PREFIX, MetricPoint, Run, utcnow
from store.queries import get_run

log = logging.getLogger(__name__)

CLAIM_WAIT_S = 30.0  # how long a job waits for its row when it was dequeued before the submitter committed
FLUSH_EVERY_S = 0.5  # metric points and progress are written in batches at most this often
POLL_STOP_EVERY_S = 0.5
MEASUREMENTS = ("trainable_params", "prompt_params", "head_params", "total_params", "prompt_tokens", "hidden_size",
                "train_seconds", "step_seconds_median", "peak_memory_mb", "eval_examples_per_second", "main_metric")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _json_safe(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """NaN and infinities are not JSON (PostgreSQL rejects them): store them as null."""
    if metrics is None:
        return None
    return {key: (value if _finite(value) or not isinstance(value, float) else None) for key, value in metrics.items()}


def _claim(run_id: int) -> dict[str, Any] | None:
    """Move the run from queued to running; its config, or None if it was cancelled or reconciled meanwhile."""
    job = get_current_job()
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        with session_scope() as session:
            claimed = session.execute(
                update(Run).where(Run.id == run_id, Run.status == "queued").values(
                    status="running", started_at=utcnow(), artifact_dir=f"runs/{run_id}",
                    worker_name=job.worker_name if job else None, worker_host=socket.gethostname(),
                    worker_pid=os.getpid())).rowcount == 1
            config = session.scalar(select(Run.config).where(Run.id == run_id))
        if claimed:
            return config
        if config is not None or time.monotonic() > deadline:
            log.warning("run %s: not queued any more (or never stored); skipping it", run_id)
            return None
        time.sleep(0.2)


class StoreReporter:
    """The engine's callbacks: stream metric points and progress into the store, and poll the stop flag.

    Writes are batched (at most every FLUSH_EVERY_S, and at each evaluation) so a fast loop costs one small
    transaction per batch; every write is conditional on the run still running, and a run that is no longer
    running (force-cancelled, reconciled) is told to stop.
    """

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.points: list[dict[str, Any]] = []
        self.step = 0
        self.total_steps: int | None = None
        self.last_flush = self.last_poll = time.monotonic()
        self.stop = False

    def on_step(self, step: int, total_steps: int, values: dict[str, float]) -> None:
        self.step, self.total_steps = step, total_steps
        self._add(step, values, prefix="")
        if time.monotonic() - self.last_flush >= FLUSH_EVERY_S:
            self.flush()

    def on_eval(self, step: int, metrics: dict[str, float]) -> None:
        self._add(step, metrics, prefix=EVAL_PREFIX)
        self.flush()

    def should_stop(self) -> bool:
        if not self.stop and time.monotonic() - self.last_poll >= POLL_STOP_EVERY_S:
            self.last_poll = time.monotonic()
            with session_scope() as session:
                row = session.execute(select(Run.status, Run.stop_requested).where(Run.id == self.run_id)).one()
            self.stop = row.stop_requested or row.status != "running"
        return self.stop

    def _add(self, step: int, values: dict[str, float], prefix: str) -> None:
        self.points += [{"run_id": self.run_id, "step": step, "key": prefix + key, "value": float(value)}
                        for key, value in values.items() if _finite(value)]

    def flush(self) -> None:
        progress = self.step / self.total_steps if self.total_steps else 0.0
        with session_scope() as session:
            if self.points:
                session.execute(insert(MetricPoint), self.points)
            session.execute(update(Run).where(Run.id == self.run_id, Run.status == "running").values(
                step=self.step, total_steps=self.total_steps, progress=min(progress, 1.0)))
        self.points = []
        self.last_flush = time.monotonic()
        job = get_current_job()
        if job is not None:
            job.meta.update(run_id=self.run_id, step=self.step, total_steps=self.total_steps, progress=progress)
            job.save_meta()

    def add_missing_history(self, history: dict[str, list[dict[str, Any]]]) -> None:
        """Store any point of the engine's final history that was not streamed (e.g. a last evaluation)."""
        with session_scope() as session:
            known = set(session.execute(select(MetricPoint.key, MetricPoint.step)
                                        .where(MetricPoint.run_id == self.run_id)).tuples())
        for kind, prefix in (("train", ""), ("eval", EVAL_PREFIX)):
            for entry in history.get(kind, []):
                values = {key: value for key, value in entry.items()
                          if key != "step" and (prefix + key, entry["step"]) not in known}
                self._add(entry["step"], values, prefix)
        self.flush()


def _finish(run_id: int, status: str, **values: Any) -> None:
    with session_scope() as session:
        done = session.execute(update(Run).where(Run.id == run_id, Run.status == "running").values(
            status=status, finished_at=utcnow(), **values)).rowcount == 1
    if not done:
        log.warning("run %s: no longer running (cancelled or reconciled meanwhile); outcome %s not recorded",
                    run_id, status)


def _measurements(result: dict[str, Any]) -> dict[str, Any]:
    values = {name: result.get(name) for name in MEASUREMENTS}
    metrics = _json_safe(result.get("metrics")) or {}
    main_value = metrics.get(result.get("main_metric") or "")
    return {**values, "metrics": metrics, "best_metrics": _json_safe(result.get("best_metrics")),
            "main_metric_value": main_value if _finite(main_value) else None,
            "step": result.get("steps") or 0, "progress": 1.0 if result.get("status") == "completed" else None}


def _record_result(run_id: int, result: dict[str, Any], reporter: StoreReporter) -> str:
    reporter.add_missing_history(result.get("history") or {})
    values = {key: value for key, value in _measurements(result).items() if value is not None}
    if result.get("status") == "stopped":
        _finish(run_id, "cancelled", error=f"stopped on request at step {reporter.step}; partial prompt saved",
                **values)
        return "cancelled"
    _finish(run_id, "succeeded", **values)
    return "succeeded"


def run_training(run_id: int) -> dict[str, Any]:
    """Train one stored run in this process and record its outcome; returns {"run_id", "status"} for RQ."""
    config = _claim(run_id)
    if config is None:
        return {"run_id": run_id, "status": "skipped"}
    reporter = StoreReporter(run_id)
    try:
        from lamp_engine.train import Callbacks, train

        with session_scope() as session:
            output_dir = run_dir(get_run(session, run_id))
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        result = train(RunConfig.from_dict(config), output_dir, callbacks=Callbacks(
            on_step=reporter.on_step, on_eval=reporter.on_eval, should_stop=reporter.should_stop))
        return {"run_id": run_id, "status": _record_result(run_id, result, reporter)}
    except TrainingDiverged as exc:
        message = str(exc)
        _finish(run_id, "failed", error=message if message.startswith("training diverged") else
                f"training diverged (NaN or infinite loss): {message}")
    except LampError as exc:
        _finish(run_id, "failed", error=str(exc))
    except Exception as exc:
        _finish(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise  # RQ keeps the traceback in its failed registry
    return {"run_id": run_id, "status": "failed"}


def run_prediction(run_id: int, texts: list[str]) -> list[dict[str, Any]]:
    """Run a finished run's prompt on a few texts (the dashboard's "try it" box)."""
    from lamp_engine.predict import predict

    with session_scope() as session:
        folder = run_dir(get_run(session, run_id))
    return predict(folder, texts)
