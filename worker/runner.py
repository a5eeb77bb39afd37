"""Start one RQ worker: one GPU, our queues, the JSON serializer and reconcile on start and periodically."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from lamp_engine.trackers import TRACKERS, TrackerError, configured
from lamp_engine.trackers.core import tracker_grace_s
from store.db import ensure_schema
from store.settings import auto_retries, store_patience_s, stored_file_limit
from worker.checkpoints import CheckpointPolicy
from worker.connection import redis_connection
from worker.queue import DEFAULT_QUEUES, TRACKERS_FIELD, reconcile
from worker.trackers import catch_up

MAINTENANCE_EVERY_S = 60
HEARTBEAT_EVERY_S = 10  # a dead worker's registration expires this + 60 s after its last heartbeat


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Make this process get SIGKILL when its parent dies (Linux), and exit now if the parent is already gone.

    RQ puts each work horse in its own process group, so without this a horse whose worker was killed would
    train on unseen; with it, worker and job fail together and reconcile finds the run's process gone.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def wait_for_redis(connection: Redis, patience_s: float) -> None:
    """Return once Redis answers; after patience_s, let its error end the worker."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            connection.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


class LampWorker(Worker):
    """An RQ worker whose horses die with it, and which reconciles the store whenever RQ runs maintenance."""

    def main_work_horse(self, job, queue) -> None:  # type: ignore[no-untyped-def]
        die_with_parent(self.pid)
        super().main_work_horse(job, queue)

    def maintain_heartbeats(self, job, execution) -> None:  # type: ignore[no-untyped-def]
        """While a horse trains, a Redis that is briefly away skips a heartbeat instead of ending the worker (and
        with it the run); the next heartbeat, every HEARTBEAT_EVERY_S, tries again."""
        try:
            super().maintain_heartbeats(job, execution)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.log.warning("heartbeat skipped, Redis is unreachable (%s); the run goes on", exc)

    def execute_job(self, job, queue) -> None:  # type: ignore[no-untyped-def]
        """A Redis that is away when a run ends costs RQ's bookkeeping of that job, not the worker: the run's
        outcome is already in the store, and the job's stale entry is cleaned by RQ's maintenance. The worker
        waits for Redis (up to LAMP_STORE_PATIENCE_S), then takes the next job."""
        try:
            super().execute_job(job, queue)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.log.warning("job %s ended while Redis was unreachable (%s); waiting for Redis", job.id, exc)
            wait_for_redis(self.connection, store_patience_s())

    def register_birth(self) -> None:
        """Registered with the trackers configured here, so the dashboard offers only those (the field goes
        when the worker's registration does)."""
        super().register_birth()
        self.connection.hset(self.key, TRACKERS_FIELD, ",".join(configured()))

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:
            marked = reconcile(self.connection)
        except Exception:  # a failing reconcile must not take the worker down; it retries next time
            self.log.exception("reconcile failed")
            return
        if marked:
            self.log.warning("reconcile marked runs failed: %s", ", ".join(map(str, marked)))
        try:
            mirrored = catch_up()
        except Exception:  # a tracker or the store away: the runs stay behind until the next round
            self.log.exception("trackers: catching up failed")
            return
        if mirrored:
            self.log.info("trackers: runs %s now mirrored whole", ", ".join(map(str, mirrored)))


def check_settings() -> None:
    """Read every setting the runs use, so a bad value stops the worker at start in one line, not a run later."""
    CheckpointPolicy.from_env()
    stored_file_limit()
    store_patience_s()
    tracker_grace_s()
    for name in configured():
        if problem := TRACKERS[name].missing_package():
            raise TrackerError(problem)
    auto_retries()


def worker_name(gpu: str | None) -> str:
    where = f"gpu{gpu.replace(',', '-')}" if gpu is not None else "cpu"
    return f"{socket.gethostname()}.{where}.{os.getpid()}"


def start_worker(queues: Sequence[str] = DEFAULT_QUEUES, burst: bool = False, gpu: str | None = None,
                 name: str | None = None) -> bool:
    """Run a worker until stopped (or, with burst, until the queues are empty); True if it worked cleanly.

    CUDA_VISIBLE_DEVICES is set before anything could import torch, and only the forked work horses import it,
    so the parent process never initialises CUDA and each horse sees exactly its GPU.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    check_settings()
    ensure_schema()
    connection = redis_connection()
    reconcile(connection)
    worker = LampWorker([Queue(queue, connection=connection, serializer=JSONSerializer) for queue in queues],
                        name=name or worker_name(gpu), connection=connection, serializer=JSONSerializer,
                        maintenance_interval=MAINTENANCE_EVERY_S, job_monitoring_interval=HEARTBEAT_EVERY_S)
    return worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
