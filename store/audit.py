"""Who stopped, cancelled, retried or deleted a run, and when: written by the queue's functions in the same
transaction as the change they make, read by the run's page and `lamp status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import RunAction, utcnow


class Action(StrEnum):
    CANCEL = "cancel"  # a queued run, before it started
    STOP = "stop"  # a running run asked to stop at its next step (it saves its partial prompt)
    FORCE_STOP = "force stop"  # a running run's work horse killed (lamp cancel --force)
    RETRY = "retry"  # queued again as a new run
    DELETE = "delete"  # its files and metric points removed; its row stays, marked deleted

    @property
    def done(self) -> str:
        return {Action.CANCEL: "cancelled", Action.STOP: "stop requested", Action.FORCE_STOP: "stopped by force",
                Action.RETRY: "retried", Action.DELETE: "deleted"}[self]


@dataclass(frozen=True)
class Recorded:
    """One recorded action, as the run's page and `lamp status` show it."""

    action: Action
    actor: str
    at: datetime
    detail: str | None

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.action.done} by {self.actor} at {self.at:%Y-%m-%d %H:%M:%S} UTC{detail}"

    def to_dict(self) -> dict[str, str | None]:
        return {"action": str(self.action), "by": self.actor, "at": self.at.isoformat(), "detail": self.detail}


def record_action(session: Session, run_id: int, action: Action, actor: str, detail: str | None = None) -> None:
    session.add(RunAction(run_id=run_id, action=action, actor=actor, at=utcnow(), detail=detail))


def actions_on(session: Session, run_id: int) -> list[Recorded]:
    """The actions on one run, oldest first."""
    rows = session.scalars(select(RunAction).where(RunAction.run_id == run_id).order_by(RunAction.id))
    return [Recorded(Action(row.action), row.actor, row.at, row.detail) for row in rows]
