"""User-facing errors of the engine: each message names what is wrong and what to do; the CLI prints it in one line."""

from lamp_common.errors import LampError


class ConfigError(LampError):
    """A configuration value is invalid; the message names the field and says what is allowed."""


class TaskError(LampError):
    """A task or its data cannot be used; the message names the task, the file and what to do."""


class ModelError(LampError):
    """A model cannot be found or loaded, or does not fit the chosen method or hardware."""


class TrainingStateError(LampError):
    """A stored trainer state cannot be loaded safely (it holds more than tensors and plain values)."""


class TrainingDiverged(LampError):
    """The training loss became NaN or infinite."""


class DiskFullError(LampError):
    """A run's files could not be written: the disk is full, over quota or refuses a file that large."""


__all__ = ["ConfigError", "DiskFullError", "LampError", "ModelError", "TaskError", "TrainingDiverged",
           "TrainingStateError"]
