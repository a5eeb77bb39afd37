"""`lamp bench soak`: a fleet of real workers on a real Redis and PostgreSQL, shot at while it trains, then checked.

N `lamp worker` processes, each with a LAMP_HOME of its own (as hosts that share no disk), take a steady stream of
small real runs (tiny-t5 on SST-2, a checkpoint every few steps) that several submitter processes queue. Meanwhile,
at random intervals, the soak
- SIGKILLs a worker with its work horse (preferring one whose run has a checkpoint) and starts a replacement,
- restarts PostgreSQL (a fast shutdown: every session is cut) and Redis (SHUTDOWN SAVE, as a Redis with
  persistence comes back with its data),
- fills the disk of a worker's LAMP_HOME: the worker is replaced by one under RLIMIT_FSIZE (a few kilobytes), so
  each file it writes past that fails with EFBIG (Python ignores SIGXFSZ) as it would with ENOSPC on a full disk;
  a tiny tmpfs, a loop device or a quota would need root. Later it is replaced by a healthy worker again,
- cancels a queued or running run (sometimes with --force).
Then it stops submitting, lets the fleet drain, runs reconcile and checks the store (`check_fleet`): no run lost
(submitted but absent), none stuck (active with no live worker), no metric point of a succeeded run duplicated,
missing or different from its result.json, every stored file's checksum valid, every failure with a reason.

The private servers come from tests/private_servers.py (a checkout's); with --redis-url and --database-url the
soak uses those servers instead, and cannot restart them (those faults are then skipped).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from lamp_common.errors import LampError
from lamp_engine.config import RunConfig, default_data_dir
from store.accounts import Actor
from store.db import ensure_schema, session_scope
from store.files import RunFileError, read_run_file
from store.models import EVAL_PREFIX, Blob, MetricPoint, Run, RunAction, RunFile
from store.settings import host_name
from store.status import ACTIVE, RunStatus

REPO_ROOT = Path(__file__).resolve().parents[1]
FAULTS = ("kill", "postgres", "redis", "disk", "cancel")
FULL_DISK_AT_MOST_S = 180.0  # a full disk is cleared once a run on it ended, or after this long
SOAK_USER = "soak"
ACTOR = Actor(SOAK_USER, admin=True)
TRANSIENT = (LampError, RedisError, DBAPIError, OSError)  # a server restarting under the soak's own calls
Log = Callable[[str], None]


@dataclass(frozen=True)
class SoakSettings:
    """How long and how hard to shoot; every number is checked here, so a bad flag is one line."""

    minutes: float
    workers: int
    submitters: int = 2
    fault_every_s: float = 20.0  # mean seconds between two faults
    steps: int = 60  # training steps of each run
    checkpoint_steps: int = 5
    backlog: int = 0  # queued runs the submitters keep waiting (0: two per worker)
    drain_s: float = 300.0  # how long the fleet may take to finish what is queued once submitting stops
    disk_limit_kb: int = 4  # the largest file a worker with a full disk can still write
    outage_s: tuple[float, float] = (1.0, 4.0)  # how long a restarted server stays down
    seed: int = 0
    redis_url: str | None = None
    database_url: str | None = None

    def __post_init__(self) -> None:
        positive = {"minutes": self.minutes, "workers": self.workers, "submitters": self.submitters,
                    "fault_every_s": self.fault_every_s, "steps": self.steps,
                    "checkpoint_steps": self.checkpoint_steps, "disk_limit_kb": self.disk_limit_kb}
        for name, value in positive.items():
            if value <= 0:
                raise LampError(f"soak: {name.replace('_', '-')} must be above 0, got {value:g}")
        if self.backlog < 0 or self.drain_s < 0:
            raise LampError("soak: backlog and drain must be >= 0")
        if bool(self.redis_url) != bool(self.database_url):
            raise LampError("soak: give both --redis-url and --database-url, or neither (then it starts its own)")

    @property
    def waiting(self) -> int:
        return self.backlog or 2 * self.workers


def soak_config(steps: int, seed: int, data_dir: str | None) -> RunConfig:
    """One small real run: tiny-t5 on SST-2, evaluated halfway and at the end on 4 examples."""
    return RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "steps": steps, "eval_every": max(1, steps // 2),
                                "batch_size": 2, "length": 4, "rank": 2, "max_eval_examples": 4, "seed": seed,
                                "data_dir": data_dir})


# --- the submitters (each in a process of its own) ---------------------------------------------------------------

def queued_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Run).where(Run.status == RunStatus.QUEUED)) or 0


def submit_stream(deadline: float, waiting: int, steps: int, data_dir: str | None, seed: int, out: str) -> None:
    """Queue runs until `deadline` (time.time()), keeping about `waiting` queued; each id the queue returned is
    appended to `out` at once, so the soak knows what was submitted even if this process dies."""
    from worker.queue import submit_run

    rng = random.Random(seed)
    with open(out, "a") as ids:
        while time.time() < deadline:
            try:
                if queued_count() < waiting:
                    run_id = submit_run(soak_config(steps, rng.randrange(1 << 30), data_dir), submitted_by=SOAK_USER)
                    ids.write(f"{run_id}\n")
                    ids.flush()
            except TRANSIENT as exc:  # a restart under way: the submission failed visibly, try the next one
                print(f"soak submitter: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
            time.sleep(rng.uniform(0.2, 1.0))


# --- the servers and the workers ---------------------------------------------------------------------------------

def private_servers() -> Any:
    """tests/private_servers.py of this checkout: a Redis and a PostgreSQL from pip-installed binaries, no root."""
    path = REPO_ROOT / "tests" / "private_servers.py"
    if not path.is_file():
        raise LampError(f"soak: {path} is missing (it ships with a checkout, not the package); give --redis-url and "
                        "--database-url of servers to use instead")
    spec = importlib.util.spec_from_file_location("private_servers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def limit_file_size(limit: int) -> Callable[[], None]:
    """A Popen preexec_fn: the child cannot write a file past `limit` bytes, as on a full disk."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@dataclass
class Slot:
    """One worker 'host': its LAMP_HOME, the worker process on it now, and until when its disk is full."""

    index: int
    home: Path
    process: subprocess.Popen | None = None
    name: str = ""
    full_until: float | None = None


@dataclass
class Fleet:
    """The servers, the worker slots and the faults done to them."""

    settings: SoakSettings
    folder: Path
    log: Log
    redis: Any = None  # the private servers (None where the soak was given URLs)
    postgres: Any = None
    slots: list[Slot] = field(default_factory=list)
    faults: Counter = field(default_factory=Counter)
    rng: random.Random = field(default_factory=random.Random)
    generation: int = 0

    def worker_env(self, slot: Slot) -> dict[str, str]:
        return {**os.environ, "LAMP_HOME": str(slot.home), "LAMP_HOST": host_name(),
                "LAMP_CHECKPOINT_STEPS": str(self.settings.checkpoint_steps), "LAMP_CHECKPOINT_SECONDS": "0",
                "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def start(self, slot: Slot, disk_full: bool = False) -> None:
        """Start a worker on the slot (under a file size limit when its disk is to be full)."""
        self.generation += 1
        slot.name = f"soak-{slot.index}-{self.generation}" + ("-full" if disk_full else "")
        slot.home.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / f"{slot.name}.log", "w")  # noqa: SIM115 - the worker keeps it
        command = [sys.executable, "-m", "lamp_cli", "worker", "--name", slot.name]
        if not disk_full:
            slot.process = subprocess.Popen(command, cwd=REPO_ROOT, env=self.worker_env(slot), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            return
        # its own log would hit the limit too: a `cat` outside the limit writes it
        slot.process = subprocess.Popen(command, cwd=REPO_ROOT, env=self.worker_env(slot), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=limit_file_size(self.settings.disk_limit_kb * 1024))
        subprocess.Popen(["cat"], stdin=slot.process.stdout, stdout=log, start_new_session=True)
        slot.process.stdout.close()

    def stop(self, slot: Slot) -> None:
        """SIGKILL the worker and its work horse (one process group)."""
        if slot.process is not None and slot.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(slot.process.pid, signal.SIGKILL)
            slot.process.wait(timeout=30)

    def live_workers(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.process is not None and slot.process.poll() is None]

    def disk_done(self, slot: Slot) -> bool:
        """Whether a full disk has done its harm (a run on it ended) or its time is up: then it is cleared."""
        if time.monotonic() > slot.full_until:
            return True
        with contextlib.suppress(*TRANSIENT), session_scope() as session:
            return bool(session.scalar(select(func.count()).select_from(Run).where(
                Run.worker_name == slot.name, Run.status.not_in(ACTIVE))))
        return False

    def keep_alive(self) -> None:
        """A worker that exited on its own (it gave up on a server) is replaced, and so is one whose full disk
        has done its harm."""
        for slot in self.slots:
            if slot.full_until is not None and self.disk_done(slot):
                self.stop(slot)
                slot.full_until = None
                self.start(slot)
            elif slot.process is None or slot.process.poll() is not None:
                self.log(f"worker {slot.name} exited ({slot.process.returncode if slot.process else '-'}); "
                         "starting a replacement")
                self.start(slot)

    # --- the faults

    def busy_slot(self) -> Slot:
        """The slot whose worker trains a run with a stored checkpoint (waited for a while), else one that trains
        any run, else any: most kills land mid-run, where a retry can resume."""
        deadline = time.monotonic() + self.settings.fault_every_s / 2
        while True:
            with session_scope() as session:
                rows = session.execute(select(Run.worker_name, Run.checkpoint_step)
                                       .where(Run.status == RunStatus.RUNNING)).all()
            by_name = {slot.name: slot for slot in self.live_workers()}
            checkpointed = [by_name[name] for name, step in rows if name in by_name and step]
            busy = [by_name[name] for name, _ in rows if name in by_name]
            if checkpointed or not busy or time.monotonic() > deadline:
                return self.rng.choice(checkpointed or busy or self.live_workers() or self.slots)
            time.sleep(0.5)

    def kill(self) -> str:
        slot = self.busy_slot()
        self.stop(slot)
        slot.full_until = None
        old = slot.name
        self.start(slot)
        return f"killed {old}, started {slot.name}"

    def restart_postgres(self) -> str:
        if self.postgres is None:
            return "skipped (given DATABASE_URL)"
        self.postgres.stop("fast")
        time.sleep(self.rng.uniform(*self.settings.outage_s))
        self.postgres.start()
        return "PostgreSQL restarted"

    def restart_redis(self) -> str:
        if self.redis is None:
            return "skipped (given REDIS_URL)"
        self.redis.stop(save=True)
        time.sleep(self.rng.uniform(*self.settings.outage_s))
        self.redis.start()
        return "Redis restarted"

    def fill_disk(self) -> str:
        healthy = [slot for slot in self.slots if slot.full_until is None]
        if not healthy:
            return "skipped (every disk is full already)"
        slot = self.rng.choice(healthy)
        self.stop(slot)
        self.start(slot, disk_full=True)
        slot.full_until = time.monotonic() + FULL_DISK_AT_MOST_S
        return f"disk full on {slot.name} (RLIMIT_FSIZE {self.settings.disk_limit_kb} KB)"

    def cancel(self) -> str:
        from worker.queue import cancel_run

        with session_scope() as session:
            active = list(session.scalars(select(Run.id).where(Run.status.in_(ACTIVE))))
        if not active:
            return "skipped (nothing active)"
        run_id, force = self.rng.choice(active), self.rng.random() < 0.3
        return f"cancel run {run_id}{' --force' if force else ''}: {cancel_run(run_id, ACTOR, force=force)}"

    def shoot(self, kind: str) -> None:
        action = {"kill": self.kill, "postgres": self.restart_postgres, "redis": self.restart_redis,
                  "disk": self.fill_disk, "cancel": self.cancel}[kind]
        try:
            self.log(f"fault {kind}: {action()}")
        except TRANSIENT as exc:  # e.g. a cancel while PostgreSQL is still coming back: the fault still counts
            self.log(f"fault {kind}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        self.faults[kind] += 1


def fault_plan(rng: random.Random) -> Iterator[str]:
    """Every kind once, in a random order, then kinds at random."""
    first = list(FAULTS)
    rng.shuffle(first)
    yield from first
    while True:
        yield rng.choice(FAULTS)


# --- the checks --------------------------------------------------------------------------------------------------

def expected_points(result: dict[str, Any]) -> Counter:
    """(key, step, value) of every finite value in a result.json's history, as the worker streams them."""
    points = Counter()
    for kind, prefix in (("train", ""), ("eval", EVAL_PREFIX)):
        for entry in result.get("history", {}).get(kind, []):
            for key, value in entry.items():
                if key != "step" and isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
                    points[(prefix + key, entry["step"])] += 1
    return points


def metric_problems(session: Any, run_id: int) -> dict[str, int]:
    """Points of a succeeded run duplicated, missing or extra, against the history its result.json holds."""
    try:
        result = json.loads(read_run_file(session, run_id, "result.json"))
    except RunFileError:
        return {"duplicated": 0, "missing": 0, "extra": 0, "no_result": 1}
    expected = expected_points(result)
    stored = Counter(tuple(row) for row in session.execute(select(MetricPoint.key, MetricPoint.step)
                                                           .where(MetricPoint.run_id == run_id)))
    return {"duplicated": sum(count - 1 for count in stored.values() if count > 1),
            "missing": sum(1 for point in expected if point not in stored),
            "extra": sum(1 for point in stored if point not in expected), "no_result": 0}


def file_problems(session: Any) -> dict[str, int]:
    """Stored files whose bytes do not hash to their recorded SHA-256 (in the store, or on this host's disk)."""
    counts = Counter(checked=0, bad=0, elsewhere=0)
    rows = session.execute(select(RunFile.sha256, RunFile.blob, RunFile.host, RunFile.path, Blob.content)
                           .outerjoin(Blob, Blob.sha256 == RunFile.blob)).all()
    for sha256, blob, host, path, content in rows:
        if blob is None and (host != host_name() or not path or not Path(path).is_file()):
            counts["elsewhere"] += 1
            continue
        data = content if blob is not None else Path(path).read_bytes()
        counts["checked"] += 1
        counts["bad"] += data is None or blob not in (None, sha256) or hashlib.sha256(data).hexdigest() != sha256
    return dict(counts)


def reason_kind(error: str) -> str:
    """A failure's reason without its numbers, cut short, to group them: 'reconcile: its worker process # on ...'."""
    return re.sub(r"\d+", "#", error.strip().splitlines()[0] if error.strip() else "")[:100]


def check_fleet(submitted: list[int]) -> dict[str, Any]:
    """The soak's verdict on the store as it is now (run it after reconcile): counts, and `broken`, one line per
    invariant that does not hold."""
    from worker.connection import redis_connection
    from worker.queue import AUTO_RETRY_ACTOR, stuck_reason

    connection = redis_connection()
    with session_scope() as session:
        runs = {run.id: run for run in session.scalars(select(Run))}
        retried_by_reconcile = set(session.scalars(select(RunAction.run_id).where(
            RunAction.actor == AUTO_RETRY_ACTOR)))
        auto = [run for run in runs.values() if run.parent_id in retried_by_reconcile]
        succeeded = [run.id for run in runs.values() if run.status == RunStatus.SUCCEEDED]
        points = Counter()
        for run_id in succeeded:
            points.update(metric_problems(session, run_id))
        files = file_problems(session)
        stuck = {run.id: reason for run in runs.values() if run.status in ACTIVE
                 and (reason := stuck_reason(run, connection))}
    failed = [run for run in runs.values() if run.status == RunStatus.FAILED]
    report = {
        "submitted": len(submitted), "runs": len(runs),
        "statuses": dict(Counter(run.status for run in runs.values())),
        "succeeded": len(succeeded), "cancelled": sum(run.status == RunStatus.CANCELLED for run in runs.values()),
        "failed": len(failed), "failed_reasons": dict(Counter(reason_kind(run.error or "") for run in failed)),
        "failed_without_reason": sum(not (run.error or "").strip() for run in failed),
        "failures": {run.id: (run.error or "")[:400] for run in failed},
        "retried": len(auto), "retried_and_resumed": sum(run.resumed_from_step is not None for run in auto),
        "retried_and_succeeded": sum(run.status == RunStatus.SUCCEEDED for run in auto),
        "lost": sorted(set(submitted) - set(runs)), "stuck": stuck,
        "still_active": sorted(run.id for run in runs.values() if run.status in ACTIVE and run.id not in stuck),
        "metric_points": {"runs_checked": len(succeeded), **{k: points[k] for k in
                                                              ("duplicated", "missing", "extra", "no_result")}},
        "files": files,
    }
    report["broken"] = broken_invariants(report)
    return report


def broken_invariants(report: dict[str, Any]) -> list[str]:
    broken = []
    if report["lost"]:
        broken.append(f"{len(report['lost'])} runs lost (submitted but absent): {report['lost'][:10]}")
    if report["stuck"]:
        broken.append(f"{len(report['stuck'])} runs stuck (active with no live worker): "
                      + "; ".join(f"run {k}: {v}" for k, v in list(report["stuck"].items())[:5]))
    points = report["metric_points"]
    for name in ("duplicated", "missing", "extra", "no_result"):
        if points[name]:
            broken.append(f"{points[name]} metric points {name.replace('_', ' ')} in succeeded runs"
                          if name != "no_result" else f"{points[name]} succeeded runs without a stored result.json")
    if report["files"].get("bad"):
        broken.append(f"{report['files']['bad']} stored files whose bytes do not match their SHA-256")
    if report["failed_without_reason"]:
        broken.append(f"{report['failed_without_reason']} failed runs without a reason")
    return broken


# --- the soak ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """os.environ with `values` set (inherited by the workers and submitters), restored afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def drain(fleet: Fleet, deadline: float) -> None:
    """Let the workers finish what is queued (and what reconcile queues again), until nothing is active."""
    from worker.queue import reconcile

    while time.monotonic() < deadline:
        fleet.keep_alive()
        try:
            with session_scope() as session:
                active = session.scalar(select(func.count()).select_from(Run).where(Run.status.in_(ACTIVE)))
            if not active and not reconcile():
                return
        except TRANSIENT as exc:
            fleet.log(f"drain: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        time.sleep(2)


def run_soak(settings: SoakSettings, log: Log) -> dict[str, Any]:
    """Run the soak; returns the report (settings, faults, timings and check_fleet's verdict)."""
    folder = Path(tempfile.mkdtemp(prefix="lamp-soak-"))
    servers = None if settings.redis_url else private_servers().ServerGroup(prefix="lamp-soak-servers-")
    fleet = Fleet(settings, folder, log, rng=random.Random(settings.seed))
    try:
        if servers is not None:
            fleet.redis, fleet.postgres = servers.redis(), servers.postgres()
        urls = (settings.redis_url or fleet.redis.url, settings.database_url or fleet.postgres.url)
        with environment(REDIS_URL=urls[0], DATABASE_URL=urls[1], LAMP_HOME=str(folder / "soak")):
            return _shoot_and_check(fleet, log)
    finally:
        for slot in fleet.slots:
            fleet.stop(slot)
        if servers is not None:
            servers.close()
        shutil.rmtree(folder, ignore_errors=True)


def _shoot_and_check(fleet: Fleet, log: Log) -> dict[str, Any]:
    from store.db import dispose
    from worker.queue import reconcile

    settings = fleet.settings
    ensure_schema()
    fleet.slots = [Slot(index, fleet.folder / f"host-{index}") for index in range(settings.workers)]
    for slot in fleet.slots:
        fleet.start(slot)
    started = time.monotonic()
    deadline = time.time() + settings.minutes * 60
    context = multiprocessing.get_context("spawn")
    id_files = [fleet.folder / f"submitted-{index}.txt" for index in range(settings.submitters)]
    submitters = [context.Process(target=submit_stream, args=(deadline, settings.waiting, settings.steps,
                                                              default_data_dir(), settings.seed * 1000 + index,
                                                              str(path)), daemon=True)
                  for index, path in enumerate(id_files)]
    for process in submitters:
        process.start()
    plan = fault_plan(fleet.rng)
    next_fault = time.monotonic() + fleet.rng.uniform(0.5, 1.5) * settings.fault_every_s
    while time.time() < deadline:
        fleet.keep_alive()
        if time.monotonic() >= next_fault:
            fleet.shoot(next(plan))
            next_fault = time.monotonic() + fleet.rng.uniform(0.5, 1.5) * settings.fault_every_s
        time.sleep(0.5)
    for kind in FAULTS:  # a soak too short for the plan still shoots each kind once
        if not fleet.faults[kind]:
            fleet.shoot(kind)
    for process in submitters:
        process.join(timeout=60)
    shot_s = time.monotonic() - started
    log(f"soak: {shot_s:.0f} s of faults done ({dict(fleet.faults)}); draining")
    for slot in fleet.slots:  # the full disks are cleared for the drain
        slot.full_until = min(slot.full_until, time.monotonic()) if slot.full_until is not None else None
    drain(fleet, time.monotonic() + settings.drain_s)
    dispose()  # connections from before the last PostgreSQL restart
    reconcile()
    submitted = [int(line) for path in id_files if path.exists() for line in path.read_text().split()]
    report = check_fleet(submitted)
    return {"settings": asdict(settings), "faults": dict(fleet.faults), "shot_s": round(shot_s, 1),
            "total_s": round(time.monotonic() - started, 1), **report}


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    points, files = report["metric_points"], report["files"]
    rows = [
        ("soak", f"{report['shot_s'] / 60:.1f} min of faults, {s['workers']} workers, {s['submitters']} submitters, "
                 f"tiny-t5 runs of {s['steps']} steps"),
        ("faults", ", ".join(f"{kind} {report['faults'].get(kind, 0)}" for kind in FAULTS)),
        ("submitted", report["submitted"]),
        ("runs in the store", f"{report['runs']} (the submitted ones and {report['retried']} automatic retries)"),
        ("succeeded", report["succeeded"]), ("cancelled", report["cancelled"]),
        ("failed, with a reason", f"{report['failed']}: " + "; ".join(
            f"{count} {reason}" for reason, count in sorted(report["failed_reasons"].items(), key=lambda i: -i[1]))),
        ("retried automatically / resumed from a checkpoint / succeeded",
         f"{report['retried']} / {report['retried_and_resumed']} / {report['retried_and_succeeded']}"),
        ("lost (submitted, absent)", len(report["lost"])), ("stuck (active, no live worker)", len(report["stuck"])),
        ("still active after the drain (live worker)", len(report["still_active"])),
        ("metric points of succeeded runs duplicated / missing / extra",
         f"{points['duplicated']} / {points['missing']} / {points['extra']} ({points['runs_checked']} runs)"),
        ("stored files with a bad checksum", f"{files.get('bad', 0)} of {files.get('checked', 0)}"),
        ("invariants", "all hold" if not report["broken"] else "BROKEN: " + "; ".join(report["broken"])),
    ]
    return "| | |\n|---|---|\n" + "".join(f"| {name} | {value} |\n" for name, value in rows)
