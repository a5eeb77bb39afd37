"""A stored run mirrored to its trackers (lamp_engine/trackers): the snapshot read from the store, each tracker's
progress kept in the store (tracker_mirrors), and the three places that send: a background thread while the run
trains (in the work horse), the worker's maintenance for the runs still behind, and `lamp sync-trackers ID`.

The store is the source of truth: a point is sent after it is stored, each tracker's cursor is the id of the last
point it took, so a tracker that was away gets exactly what it missed, from whichever host sends next.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from lamp_engine.config import RunConfig
from lamp_engine.errors import ConfigError
from lamp_engine.trackers import Mirror, MirrorState, Point, Snapshot, Tracker, chosen, configured, sync
from lamp_engine.trackers.core import first_line, tracker_grace_s, trackers_for
from lamp_engine.trackers.runs import run_name, run_tags, summary_of
from store.artifacts import TRAINER_STATE
from store.db import session_scope
from store.files import materialise_run
from store.models import MetricPoint, Run, TrackerMirror, utcnow
from store.status import FINISHED

log = logging.getLogger(__name__)

CATCH_UP_RUNS = 20  # runs a worker's maintenance brings up to date at most per round
STATE_FIELDS = ("mirror_key", "remote_id", "url", "sent_seq", "files_sent", "finished", "error")


def load_states(run_id: int, names: list[str]) -> dict[str, MirrorState]:
    """Each tracker's progress with the run as stored (a fresh state for a tracker that has nothing yet)."""
    with session_scope() as session:
        rows = {row.tracker: row for row in session.scalars(select(TrackerMirror).where(
            TrackerMirror.run_id == run_id))}
    return {name: MirrorState(name, **{field: getattr(rows[name], field) for field in STATE_FIELDS})
            if name in rows else MirrorState(name) for name in names}


def save_state(run_id: int, state: MirrorState) -> None:
    values = {field: getattr(state, field) for field in STATE_FIELDS}
    with session_scope() as session:
        row = session.scalar(select(TrackerMirror).where(TrackerMirror.run_id == run_id,
                                                         TrackerMirror.tracker == state.tracker))
        if row is None:
            session.add(TrackerMirror(run_id=run_id, tracker=state.tracker, updated_at=utcnow(), **values))
            return
        for field, value in values.items():
            setattr(row, field, value)
        row.updated_at = utcnow()


def epoch_ms(moment: datetime | None) -> int:
    return int((moment.timestamp() if moment else time.time()) * 1000)


def store_snapshot(run_id: int, after_seq: int, folder: Path | None) -> Snapshot:
    """The run as stored now: its points after `after_seq` and, once it ended, its outcome and `folder` (its
    files, which the caller has on disk)."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        points = [Point(row.id, row.key, row.step, row.value) for row in session.scalars(
            select(MetricPoint).where(MetricPoint.run_id == run_id, MetricPoint.id > after_seq)
            .order_by(MetricPoint.id))]
        config = RunConfig.from_stored(run.config, f"run {run_id}")
        ended = run.status in FINISHED
        values = {column.key: getattr(run, column.key) for column in Run.__table__.columns}
        return Snapshot(
            key=f"run {run_id}", name=run_name(config, run_id), params=config.flat(),
            tags=run_tags(config, run_id, run.submitted_by, None), started_ms=epoch_ms(run.started_at),
            points=points, last_step=run.step or 0, summary=summary_of(values, run.metrics if ended else None),
            folder=folder if ended else None, status=str(run.status) if ended else None)


def run_trackers(run: Run) -> list[str]:
    """The trackers this run goes to: those configured on this worker, as the run's choices turn them on or off."""
    return chosen(run.trackers)


def start_mirror(run_id: int, folder: Path) -> Mirror | None:
    """The background thread that mirrors a run while it trains in this process; None when it goes nowhere (or
    the store could not say where: a worker's maintenance mirrors the run once it ended)."""
    try:
        with session_scope() as session:
            names = run_trackers(session.get(Run, run_id))
        states = load_states(run_id, names)
        for state in states.values():
            save_state(run_id, state)  # the run page shows the trackers from the start; maintenance finds them
    except Exception as exc:
        log.warning("run %s: not mirrored while it trains (%s)", run_id, first_line(exc))
        return None
    if not names:
        return None
    return Mirror(trackers_for(names), states, lambda: store_snapshot(run_id, cursor(states), folder),
                  lambda state: save_state(run_id, state)).start()


def cursor(states: dict[str, MirrorState]) -> int:
    """Points after this id are all any tracker still needs."""
    return min((state.sent_seq for state in states.values()), default=0)


def finish_mirror(run_id: int, mirror: Mirror | None) -> None:
    """After the run's outcome is stored: a bounded last round (LAMP_TRACKER_GRACE_S); what is still behind is
    sent by a worker's maintenance or `lamp sync-trackers`."""
    if mirror is None:
        return
    try:
        grace = tracker_grace_s()
    except ConfigError as exc:  # checked when the worker started; a bad value now costs the grace, not the run
        log.warning("%s", exc)
        grace = 0.0
    for name, state in mirror.finish(grace).items():
        if not state.finished:
            log.warning("run %s: %s is behind (%s); a worker's maintenance sends the rest", run_id, name,
                        state.error or "still sending")


def sync_run(run_id: int, trackers: dict[str, Tracker | str] | None = None) -> dict[str, MirrorState]:
    """Bring every tracker of one run up to date now, in this process (its files fetched from the store into a
    temporary folder); each state says how far it got."""
    with session_scope() as session:
        run = session.get(Run, run_id)
        names = sorted(set(run_trackers(run)) | {row.tracker for row in session.scalars(
            select(TrackerMirror).where(TrackerMirror.run_id == run_id))})
        ended = run.status in FINISHED
    states = load_states(run_id, names)
    trackers = trackers or trackers_for(names)
    with tempfile.TemporaryDirectory(prefix=f"lamp-run{run_id}-") as temporary:
        folder = Path(temporary)
        if ended and not all(state.files_sent or state.finished for state in states.values()):
            materialise_run(run_id, folder, skip=[TRAINER_STATE])
        snapshot = store_snapshot(run_id, cursor(states), folder)
        for name, state in states.items():
            tracker = trackers[name]
            if state.finished:
                continue
            if isinstance(tracker, str):
                state.error = tracker
                save_state(run_id, state)
                continue
            try:
                sync(tracker, snapshot, state, lambda changed: save_state(run_id, changed))
            except Exception as exc:  # a tracker that is away: said in the state, tried again later
                state.error = first_line(exc)
                save_state(run_id, state)
    return states


def runs_behind(limit: int = CATCH_UP_RUNS) -> list[int]:
    """Ended runs that a tracker configured here does not have whole yet, oldest first."""
    names = configured()
    if not names:
        return []
    with session_scope() as session:
        return list(session.scalars(
            select(TrackerMirror.run_id).join(Run, Run.id == TrackerMirror.run_id)
            .where(TrackerMirror.tracker.in_(names), TrackerMirror.finished.is_(False), Run.status.in_(FINISHED))
            .group_by(TrackerMirror.run_id).order_by(func.min(TrackerMirror.updated_at)).limit(limit)))


def catch_up() -> list[int]:
    """A worker's maintenance: send what trackers missed of ended runs; the runs brought up to date."""
    done = []
    for run_id in runs_behind():
        states = sync_run(run_id)
        if all(state.finished for state in states.values()):
            done.append(run_id)
    return done
