"""Checkpoints of a training run's state in the store, so a retried run continues on any worker of any host.

The engine asks after every step whether a checkpoint is due (every LAMP_CHECKPOINT_STEPS steps or
LAMP_CHECKPOINT_SECONDS seconds, whichever comes first; 0 turns either off) and hands over its trainer state;
the worker stores it as the run's `trainer_state.pt` and records the step. A prompt method's state is a few
megabytes at most, so checkpoints are cheap. A run that starts with a stored state (a retry inherits its
parent's) writes it into its folder and resumes from it.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError

from store.artifacts import TRAINER_STATE
from store.db import first_line, session_scope, unreachable, with_retries
from store.files import forget_unused_blob, materialise_run, store_run_file
from store.models import Run
from store.settings import SettingError, env_number, stored_file_limit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckpointPolicy:
    """How often a run's trainer state is stored: every `every_steps` steps or `every_seconds` seconds."""

    every_steps: int = 50
    every_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.every_seconds < 0:
            raise SettingError(f"checkpoints: every_steps and every_seconds must be >= 0 (0 turns one off), got "
                               f"{self.every_steps} and {self.every_seconds}")

    @classmethod
    def from_env(cls) -> CheckpointPolicy:
        steps = env_number("LAMP_CHECKPOINT_STEPS", cls.every_steps)
        if not steps.is_integer():
            raise SettingError(f"LAMP_CHECKPOINT_STEPS: {steps:g} is not a whole number of steps; set e.g. 50")
        return cls(int(steps), env_number("LAMP_CHECKPOINT_SECONDS", cls.every_seconds))

    def due(self, steps_since: int, seconds_since: float) -> bool:
        return bool((self.every_steps and steps_since >= self.every_steps)
                    or (self.every_seconds and seconds_since >= self.every_seconds))


class Checkpointer:
    """The engine's checkpoint callbacks for one run. A checkpoint that cannot be stored now (the database is
    restarting) is skipped, not waited for: training goes on and the next one is stored."""

    def __init__(self, run_id: int, folder: Path, policy: CheckpointPolicy, start_step: int = 0) -> None:
        self.run_id, self.folder, self.policy = run_id, folder, policy
        self.last_step, self.last_time = start_step, time.monotonic()

    def due(self, step: int) -> bool:
        return self.policy.due(step - self.last_step, time.monotonic() - self.last_time)

    def store(self, step: int, path: Path) -> None:
        self.last_step, self.last_time = step, time.monotonic()
        if path.stat().st_size > stored_file_limit():  # too big for the store: keep it on this host's disk
            self.folder.mkdir(parents=True, exist_ok=True)
            path = Path(shutil.move(path, self.folder / TRAINER_STATE))
        try:
            old = with_retries(lambda: self._record(step, path), f"run {self.run_id}: checkpoint", patience_s=0)
        except DBAPIError as exc:
            if not unreachable(exc):
                raise
            log.warning("run %s: checkpoint of step %s skipped, the store is unreachable (%s)", self.run_id, step,
                        first_line(exc))
            return
        forget_unused_blob(old)

    def _record(self, step: int, path: Path) -> str | None:
        with session_scope() as session:
            old = store_run_file(session, self.run_id, TRAINER_STATE, path)
            session.execute(update(Run).where(Run.id == self.run_id).values(checkpoint_step=step))
        return old


def restore_checkpoint(run_id: int, folder: Path) -> int | None:
    """Write the run's stored trainer state into its folder; the step it resumes from, or None to start afresh
    (no checkpoint, or one kept on another host's disk, which is logged)."""
    def stored_step() -> int | None:
        with session_scope() as session:
            return session.scalar(select(Run.checkpoint_step).where(Run.id == run_id))

    step = with_retries(stored_step, f"run {run_id}: checkpoint")
    if step is None:
        return None
    problems = with_retries(lambda: materialise_run(run_id, folder, [TRAINER_STATE]), f"run {run_id}: checkpoint")
    if problems or not (folder / TRAINER_STATE).is_file():
        log.warning("run %s: starting from step 0, its checkpoint cannot be read here (%s)", run_id,
                    "; ".join(problems) or "not stored")
        return None

    def mark_resumed() -> None:
        with session_scope() as session:
            session.execute(update(Run).where(Run.id == run_id).values(resumed_from_step=step))

    with_retries(mark_resumed, f"run {run_id}: resume")
    return step
