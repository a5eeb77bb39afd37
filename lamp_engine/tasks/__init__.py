"""Tasks: a registry from task names to `Task` classes."""

from __future__ import annotations

from lamp_engine.errors import TaskError
from lamp_engine.tasks.base import Example, Splits, Task
from lamp_engine.tasks.classification import CB, RTE, SST2

TASKS: dict[str, type[Task]] = {task.name: task for task in (SST2, CB, RTE)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise TaskError(f"task: unknown task {name!r}; choose one of {', '.join(sorted(TASKS))}")
    return TASKS[name]()


__all__ = ["TASKS", "Example", "Splits", "Task", "TaskError", "get_task"]
