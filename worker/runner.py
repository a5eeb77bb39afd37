"""Start one RQ worker: one GPU, our queues, the JSON serializer and reconcile on start and periodically."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from rq import Queue, Worker
from rq.serializers import JSONSerializer

from store.db import ensure_schema
from worker.connection import redis_connection
from worker.queue import DEFAULT_QUEUES, reconcile

MAINTENANCE_EVERY_S = 60
HEARTBEAT_EVERY_S = 10  # a dead worker's registration expires this + 60 s after its last heartbeat


class LampWorker(Worker):
    """An RQ worker that also reconciles the store with the queue whenever RQ runs its own maintenance."""

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:
            marked = reconcile(self.connection)
        except Exception:  # a failing reconcile must not take the worker down; it retries next time
            self.log.exception("reconcile failed")
            return
        if marked:
            self.log.warning("reconcile marked runs failed: %s", ", ".join(map(str, marked)))


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
    ensure_schema()
    connection = redis_connection()
    reconcile(connection)
    worker = LampWorker([Queue(queue, connection=connection, serializer=JSONSerializer) for queue in queues],
                        name=name or worker_name(gpu), connection=connection, serializer=JSONSerializer,
                        maintenance_interval=MAINTENANCE_EVERY_S, job_monitoring_interval=HEARTBEAT_EVERY_S)
    return worker.work(burst=burst, logging_level="INFO", with_scheduler=False)
