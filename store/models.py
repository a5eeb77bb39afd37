"""The run store's tables: runs, the metric points they stream while training, the sweeps that group them, and
the files they write (content-addressed blobs, so a retry or a re-upload never stores the same bytes twice); and
the people: accounts, failed logins and who acted on which run (store/accounts.py, logins.py, audit.py).

The schema is created and changed only by the Alembic migrations in migrations/; these classes describe it.
A run's measurement columns are named after the fields of `RunResult` that it marks as columns, and
`result_columns` copies a result into them by that list.
Metric point keys: training points use the engine's names ("loss", "lr"); evaluation points are prefixed
("eval_accuracy", "eval_f1"), so a training and an evaluation value of the same name never collide.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lamp_common.result import EVAL_PREFIX, Outcome, RunResult  # noqa: F401  (EVAL_PREFIX: imported from here too)
from store.status import RunStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, PostgreSQL as timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(timezone.utc)")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Sweep(Base):
    """A group of runs launched together over a grid of flat config fields."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    grid: Mapped[dict[str, list[Any]]] = mapped_column(JSON)


class Run(Base):
    """One (method, model, task, hyper-parameters, seed): its config, lifecycle and every measurement."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_status", "status"), Index("ix_runs_created_at", "created_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.QUEUED)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(300))
    task: Mapped[str] = mapped_column(String(100))
    job_id: Mapped[str | None] = mapped_column(String(64))
    worker_name: Mapped[str | None] = mapped_column(String(200))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer)
    trainable_params: Mapped[int | None] = mapped_column(Integer)
    prompt_params: Mapped[int | None] = mapped_column(Integer)
    head_params: Mapped[int | None] = mapped_column(Integer)
    total_params: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    hidden_size: Mapped[int | None] = mapped_column(Integer)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    step_seconds_median: Mapped[float | None] = mapped_column(Float)
    peak_memory_mb: Mapped[float | None] = mapped_column(Float)
    eval_examples_per_second: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    best_metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    main_metric: Mapped[str | None] = mapped_column(String(64))
    main_metric_value: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    artifact_dir: Mapped[str | None] = mapped_column(String(500))
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_by: Mapped[str | None] = mapped_column(String(200))
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)  # step of its last stored trainer state
    resumed_from_step: Mapped[int | None] = mapped_column(Integer)  # it continued a checkpoint of this step
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # deleted: files gone, row kept for the audit
    health: Mapped[str | None] = mapped_column(String(500))  # "not learning: ..." (lamp_engine/health.py)
    trackers: Mapped[dict[str, bool] | None] = mapped_column(JSON)  # trackers turned on/off for this run (--mlflow)
    # A learning-rate search (lamp_engine/tuning.py): a search point's {"role": "search", "key", "seeds"}; a final
    # run's {"role": "final", "key", "chosen_lr", "grid": [[lr, selection score], ...], "metric", "split"}.
    lr_tuning: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    def to_dict(self) -> dict[str, Any]:
        """Every column as JSON-ready values (datetimes as ISO strings), for `lamp status --json` and exports."""
        out: dict[str, Any] = {}
        for column in self.__table__.columns:
            value = getattr(self, column.key)
            out[column.key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class MetricPoint(Base):
    """One value of one metric at one step of one run, streamed in while it trains."""

    __tablename__ = "metric_points"
    __table_args__ = (Index("ix_metric_points_run_key_step", "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class TrackerMirror(Base):
    """How far one experiment tracker (MLflow, W&B) has one run: lamp_engine.trackers.MirrorState, persisted.
    Points up to `sent_seq` (a metric point's id) are in the tracker; `finished`: it has the whole run, ended."""

    __tablename__ = "tracker_mirrors"
    __table_args__ = (UniqueConstraint("run_id", "tracker", name="uq_tracker_mirrors_run_tracker"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    tracker: Mapped[str] = mapped_column(String(16))
    mirror_key: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(String(1000))
    sent_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    files_sent: Mapped[bool] = mapped_column(Boolean, default=False)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(String(500))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Blob(Base):
    """The bytes of one file content, named by their SHA-256 (stored once however many runs or uploads hold it)."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunFile(Base):
    """One file of a run's folder (`name` is its path inside it, e.g. "peft/adapter_config.json").

    Its content is the blob `blob` when the store holds it; a file above the size limit stays on the disk of the
    worker that wrote it, and `host` and `path` say where. `sha256` checks the bytes wherever they are read.
    """

    __tablename__ = "run_files"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_run_files_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    host: Mapped[str | None] = mapped_column(String(255))
    path: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Upload(Base):
    """A dataset uploaded in the dashboard or given to `lamp submit`, fetched by whichever worker trains on it."""

    __tablename__ = "uploads"

    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    size: Mapped[int] = mapped_column(BigInteger)
    uploaded_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Account(Base):
    """One person who logs in to an exposed dashboard with a name and a password (`lamp user add`).

    `password_hash` is an scrypt hash (lamp_common.passwords); None for a person who logs in through the identity
    provider only, whose account (named by the e-mail) exists to make them an admin.
    """

    __tablename__ = "accounts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginFailure(Base):
    """A refused password, by name and client address: counted across sessions and processes to lock guessing."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_name_at", "name", "at"),
                      Index("ix_login_failures_address_at", "address", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RunAction(Base):
    """Who stopped, cancelled, retried or deleted a run, and when. No foreign key: the record outlives the run."""

    __tablename__ = "run_actions"
    __table_args__ = (Index("ix_run_actions_run_id", "run_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[str | None] = mapped_column(String(500))


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON (PostgreSQL rejects them): store them as null, inside dicts too."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    return None if isinstance(value, float) and not math.isfinite(value) else value


def result_columns(result: RunResult) -> dict[str, Any]:
    """The run columns a result fills (RunResult's column fields; unknown values are left out)."""
    values = {name: json_safe(getattr(result, name)) for name in RunResult.column_names()}
    main = result.main_metric_value
    values.update(main_metric_value=main if finite(main) else None, step=result.steps,
                  progress=1.0 if result.status is Outcome.COMPLETED else None)
    return {key: value for key, value in values.items() if value is not None}
