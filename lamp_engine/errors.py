"""User-facing errors: each message names what is wrong and what to do; the CLI prints it in one line."""


class LampError(ValueError):
    """Base of every error caused by the user's input rather than by a bug."""


class ConfigError(LampError):
    """A configuration value is invalid; the message names the field and says what is allowed."""


class TaskError(LampError):
    """A task or its data cannot be used; the message names the task, the file and what to do."""


class ModelError(LampError):
    """A model cannot be found or loaded, or does not fit the chosen method or hardware."""


class TrainingDiverged(LampError):
    """The training loss became NaN or infinite."""
