"""Which experiment trackers have a run and which are behind, for the run's page and `lamp status`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.models import MetricPoint, Run, TrackerMirror
from store.status import FINISHED


def mirror_status(session: Session, run_id: int) -> list[dict[str, Any]]:
    """One dict per tracker of the run: tracker, url, error, points_behind (stored points it has not taken),
    up_to_date (it has every stored point, and once the run ended, the whole run)."""
    ended = session.scalar(select(Run.status).where(Run.id == run_id)) in FINISHED
    out = []
    for mirror in session.scalars(select(TrackerMirror).where(TrackerMirror.run_id == run_id)
                                  .order_by(TrackerMirror.tracker)):
        behind = session.scalar(select(func.count()).select_from(MetricPoint).where(
            MetricPoint.run_id == run_id, MetricPoint.id > mirror.sent_seq)) or 0
        out.append({"tracker": mirror.tracker, "url": mirror.url, "error": mirror.error, "points_behind": behind,
                    "up_to_date": mirror.finished if ended else behind == 0})
    return out
