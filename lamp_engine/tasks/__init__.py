"""Tasks: the paper's twelve benchmarks and the user's own file, each rendered as text-to-text examples."""

from __future__ import annotations

from lamp_engine.errors import TaskError
from lamp_engine.tasks.base import Example, Splits, Task, describe_truncation
from lamp_engine.tasks.benchmark import BenchmarkTask
from lamp_engine.tasks.custom import CUSTOM_TASK, CustomTask
from lamp_engine.tasks.glue import GLUE_TASKS
from lamp_engine.tasks.superglue import SUPERGLUE_TASKS

# In the paper's order: SuperGLUE, then GLUE.
TASKS: dict[str, type[BenchmarkTask]] = {task.name: task for task in (*SUPERGLUE_TASKS, *GLUE_TASKS)}


def get_task(name: str) -> Task:
    """A fresh task object for a benchmark name or 'custom' (the user's CSV/JSONL file)."""
    if name == CUSTOM_TASK:
        return CustomTask()
    if name not in TASKS:
        raise TaskError(f"task: unknown task {name!r}; choose one of {', '.join(TASKS)} or {CUSTOM_TASK}")
    return TASKS[name]()


__all__ = ["CUSTOM_TASK", "TASKS", "Example", "Splits", "Task", "TaskError", "describe_truncation", "get_task"]
