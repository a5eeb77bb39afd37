"""User-facing errors of the engine: each message names what is wrong and what to do; the CLI prints it in one line."""

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

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


OUT_OF_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextlib.contextmanager
def disk_writes(folder: Path) -> Iterator[None]:
    """A write that fails for want of disk becomes one line naming the folder and what to do. torch's zip writer
    reports a failed write as a RuntimeError of its own ("unexpected pos", "file write failed"), which says
    nothing about the disk."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in OUT_OF_DISK:
            raise
        raise DiskFullError(f"could not write the run's files under {folder}: {os.strerror(exc.errno)}; free space "
                            "there (or raise its quota) and retry the run") from exc
    except RuntimeError as exc:
        if not torch_writer_failed(str(exc)):
            raise
        raise DiskFullError(f"could not write the run's files under {folder}: torch's writer failed (a full disk, "
                            "a quota or a file-size limit); free space there (or raise its quota) and retry the "
                            "run") from exc


def torch_writer_failed(message: str) -> bool:
    """torch's zip writer failed ("unexpected pos" at inline_container.cc); its reader's failures (a corrupted
    checkpoint read back on resume) go through the same file and are not a full disk."""
    return "PytorchStreamWriter" in message or ("inline_container" in message and "PytorchStreamReader" not in message)


__all__ = ["ConfigError", "DiskFullError", "LampError", "ModelError", "TaskError", "TrainingDiverged",
           "TrainingStateError", "disk_writes"]
