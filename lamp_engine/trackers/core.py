"""What every tracker shares: which are configured, what a run looks like to them, how far each got, and the
background thread that keeps them up to date without ever holding up training."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lamp_engine.errors import ConfigError

log = logging.getLogger(__name__)

SEND_EVERY_S = 2.0  # how often the mirror looks for new points while a run trains
BACKOFF_S = (1.0, 60.0)  # the first wait after a failure, doubled each time up to the second
BATCH = 500  # points per request


@dataclass(frozen=True)
class TrackerKind:
    """A tracker: the variable that turns it on and the package (and our extra) its client needs."""

    name: str
    title: str
    variable: str
    package: str
    module: str  # lamp_engine.trackers.<module>: its Tracker

    def missing_package(self) -> str | None:
        """The one line to show when the variable is set but the client is not installed, else None."""
        if importlib.util.find_spec(self.package) is not None:
            return None
        return f"{self.variable} is set but {self.package} is not installed: pip install 'lamp-studio[{self.name}]'"


TRACKERS = {
    "mlflow": TrackerKind("mlflow", "MLflow", "LAMP_MLFLOW_TRACKING_URI", "mlflow", "mlflow_tracker"),
    "wandb": TrackerKind("wandb", "Weights & Biases", "LAMP_WANDB_PROJECT", "wandb", "wandb_tracker"),
}


class TrackerError(ConfigError):
    """A tracker asked for but not usable here (its variable unset, its package missing)."""


def tracker_grace_s() -> float:
    """LAMP_TRACKER_GRACE_S: how long the end of a run waits for its trackers before leaving the rest to a later
    round (a worker's maintenance, `lamp sync-trackers`); default 30."""
    text = os.environ.get("LAMP_TRACKER_GRACE_S", "").strip() or "30"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ConfigError(f"LAMP_TRACKER_GRACE_S: {text!r} is not a number of seconds from 0 to 3600")
    return value


def configured() -> list[str]:
    """The trackers whose variable is set in this process's environment."""
    return [name for name, kind in TRACKERS.items() if os.environ.get(kind.variable, "").strip()]


def chosen(choices: dict[str, bool] | None) -> list[str]:
    """The trackers a run is mirrored to: every configured one, less those the run turned off (`--no-mlflow`).
    A tracker the run asks for (`--mlflow`) that is not configured here is kept, so its mirror says why not."""
    choices = choices or {}
    return [name for name in TRACKERS if choices.get(name, name in configured())]


def make_tracker(name: str) -> Tracker:
    """The tracker `name` as configured here; TrackerError in one line when it cannot be used."""
    kind = TRACKERS[name]
    if name not in configured():
        raise TrackerError(f"{name}: {kind.variable} is not set here; set it to mirror runs to {name}")
    if problem := kind.missing_package():
        raise TrackerError(problem)
    module = importlib.import_module(f"lamp_engine.trackers.{kind.module}")
    return module.from_environment()


@dataclass(frozen=True)
class Point:
    """One metric value at one step; `seq` orders the points of a run as they were recorded."""

    seq: int
    key: str
    step: int
    value: float


@dataclass
class Snapshot:
    """What a run has produced so far, as the trackers see it."""

    key: str  # our name for the run, unique in this store ("run 7") or on this disk (a folder)
    name: str  # the tracker run's display name
    params: dict[str, Any]  # the flattened config
    tags: dict[str, str]  # method, model, task, backbone family, submitter, our run id
    started_ms: int  # the run's start, milliseconds since the epoch
    points: list[Point]  # in seq order (those after the trackers' cursors, at least)
    last_step: int = 0  # the run's last step: where the summary metrics are logged
    summary: dict[str, float] = field(default_factory=dict)  # costs and test metrics, once known
    folder: Path | None = None  # the finished run's files (None while it trains)
    skip_files: tuple[str, ...] = ("trainer_state.pt",)  # files that are only for resuming
    status: str | None = None  # the run's outcome (succeeded, failed, cancelled), once it ended

    def files(self) -> Iterator[Path]:
        """The top-level files and folders of the run to send as artifacts."""
        if self.folder is None or not self.folder.is_dir():
            return
        yield from (path for path in sorted(self.folder.iterdir()) if path.name not in self.skip_files)

    def point_time_ms(self, step: int) -> int:
        """A point's time: the run's start plus a millisecond per step. Derived, not measured, so that a batch sent
        again after a lost answer is the same batch (MLflow keeps one of identical points)."""
        return self.started_ms + step


@dataclass
class MirrorState:
    """How far one tracker has the run; persisted by the mirror's owner after every change."""

    tracker: str
    mirror_key: str = field(default_factory=lambda: uuid.uuid4().hex)  # finds the tracker's run after a lost answer
    remote_id: str | None = None
    url: str | None = None  # the tracker run's page (or, offline, where its files are)
    sent_seq: int = 0  # every point up to this seq is in the tracker
    files_sent: bool = False
    finished: bool = False  # the tracker has the whole run, ended
    error: str | None = None  # the last failure, cleared by the next success

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class Tracker(Protocol):
    """One tracker's client. Every method may raise: the mirror retries later. Each must be idempotent."""

    name: str

    def open(self, snapshot: Snapshot, state: MirrorState) -> None:
        """Find or create the tracker's run for `state.mirror_key`, with its params and tags; set remote_id and
        url. Cheap once this object has opened it (it is called before every round)."""

    def send(self, snapshot: Snapshot, points: list[Point]) -> None: ...

    def summarise(self, snapshot: Snapshot) -> None: ...

    def upload(self, snapshot: Snapshot) -> None: ...

    def close(self, snapshot: Snapshot) -> None: ...


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def sync(tracker: Tracker, snapshot: Snapshot, state: MirrorState, save: Callable[[MirrorState], None]) -> None:
    """Send the tracker what it does not have of the run yet; `save` persists the state after each step forward.
    Raises whatever the tracker raised (the state says how far it got)."""
    known = state.remote_id
    tracker.open(snapshot, state)
    if state.remote_id != known:
        save(state)
    new = [point for point in snapshot.points if point.seq > state.sent_seq]
    for start in range(0, len(new), BATCH):
        batch = new[start:start + BATCH]
        tracker.send(snapshot, batch)
        state.sent_seq = batch[-1].seq
        save(state)
    if snapshot.status is None:
        return
    tracker.summarise(snapshot)
    if not state.files_sent:
        tracker.upload(snapshot)
        state.files_sent = True
        save(state)
    tracker.close(snapshot)
    state.finished, state.error = True, None
    save(state)


class Mirror:
    """A background thread that keeps each tracker up to date with a run, retrying with back-off.

    `snapshot()` is called on that thread, never on the training loop's; nothing the trackers do (a timeout, a
    refusal, an exception) reaches the run. `finish(grace_s)` gives the mirror a bounded time to send the end.
    """

    def __init__(self, trackers: dict[str, Tracker | str], states: dict[str, MirrorState],
                 snapshot: Callable[[], Snapshot], save: Callable[[MirrorState], None] = lambda state: None,
                 every_s: float = SEND_EVERY_S) -> None:
        self.trackers, self.states, self.snapshot, self.every_s = trackers, states, snapshot, every_s
        self.save = save
        self.next_try = dict.fromkeys(trackers, 0.0)
        self.wait_s = dict.fromkeys(trackers, BACKOFF_S[0])
        self.wake, self.ending, self.abandoned = threading.Event(), threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="lamp-trackers", daemon=True)
        for name, tracker in trackers.items():
            if isinstance(tracker, str):  # not usable here: the mirror says why, and sends nothing
                states[name].error = tracker
                self._save(states[name])

    def start(self) -> Mirror:
        self.thread.start()
        return self

    def pending(self) -> list[str]:
        """The trackers that do not have the whole run yet (and can be sent to)."""
        return [name for name, state in self.states.items()
                if not state.finished and not isinstance(self.trackers[name], str)]

    def finish(self, grace_s: float) -> dict[str, MirrorState]:
        """Ask for a last round now that the run has ended; wait at most grace_s for the trackers to take it.
        After that the thread is abandoned: a request still in flight is not waited for and changes no state (a
        later round, from the saved states, sends what is missing)."""
        self.ending.set()
        for name in self.next_try:
            self.next_try[name] = 0.0
        self.wake.set()
        self.thread.join(grace_s)
        self.abandoned.set()
        return self.states

    def _run(self) -> None:
        while not self.abandoned.is_set():
            ending = self.ending.is_set()
            self._round()
            if ending and not self.pending():
                return
            self.wake.wait(self.every_s)
            self.wake.clear()

    def _round(self) -> None:
        due = [name for name in self.pending() if self.next_try[name] <= time.monotonic()]
        if not due:
            return
        try:
            snapshot = self.snapshot()
        except Exception as exc:  # the source (the store) is away: try again at the next round
            log.warning("trackers: the run could not be read (%s)", first_line(exc))
            return
        for name in due:
            self._sync_one(name, snapshot)

    def _sync_one(self, name: str, snapshot: Snapshot) -> None:
        state, tracker = self.states[name], self.trackers[name]
        try:
            sync(tracker, snapshot, state, self._save)
            self.wait_s[name] = BACKOFF_S[0]
            if state.error:
                state.error = None
                self._save(state)
        except Exception as exc:  # a tracker's failure of any kind stays here
            state.error = first_line(exc)
            self.next_try[name] = time.monotonic() + self.wait_s[name]
            log.warning("%s: not sent (%s); trying again in %.0f s", name, state.error, self.wait_s[name])
            self.wait_s[name] = min(self.wait_s[name] * 2, BACKOFF_S[1])
            self._save(state)

    def _save(self, state: MirrorState) -> None:
        if self.abandoned.is_set():
            return
        try:
            self.save(state)
        except Exception as exc:  # the state is kept here and saved with the next change
            log.warning("%s: its progress was not saved (%s)", state.tracker, first_line(exc))


def trackers_for(names: list[str]) -> dict[str, Tracker | str]:
    """Each tracker by name, or the one line saying why it cannot be used here."""
    out: dict[str, Tracker | str] = {}
    for name in names:
        try:
            out[name] = make_tracker(name)
        except TrackerError as exc:
            out[name] = str(exc)
    return out
