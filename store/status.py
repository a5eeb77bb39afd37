"""A run's status: one type, with the sets of statuses each rule is about (in the spirit of rq's JobStatus)."""

from __future__ import annotations

from enum import StrEnum

from lamp_common.result import Outcome


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def from_outcome(cls, outcome: Outcome) -> RunStatus:
        """The status of a run whose training loop ended this way: a stop on request is a cancellation."""
        return {Outcome.COMPLETED: cls.SUCCEEDED, Outcome.STOPPED: cls.CANCELLED}[Outcome(outcome)]


ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})  # a worker has it or will take it; it can be cancelled
FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})  # it will not change again
RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})  # `lamp retry` queues it again as a new run
WITH_PROMPT = frozenset({RunStatus.SUCCEEDED, RunStatus.CANCELLED})  # it saved a prompt (a stop saves the partial one)
