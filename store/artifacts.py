"""Safe paths into a run's local folder (LAMP_HOME/runs/ID): a worker's cache of the run's stored files, and the
only copy of the files of runs that ended before files moved into the store.

No path from user input is opened unchecked: the folder comes from the run's row (written by the worker) and
every name is resolved and checked to stay inside it, after resolving links.
"""

from __future__ import annotations

from pathlib import Path

from lamp_common.errors import LampError
from store.db import lamp_home
from store.models import Run

TRAINER_STATE = "trainer_state.pt"  # the engine's resumable state: what a checkpoint stores
INTERNAL_FILES = (TRAINER_STATE, "dispersion.json")  # for resuming and the dashboard; not part of an export


class ArtifactError(LampError):
    """A requested run file lies outside the run's folder, or is missing."""


def run_dir(run: Run) -> Path:
    """The run's folder, resolved and checked to lie inside LAMP_HOME."""
    if not run.artifact_dir:
        raise ArtifactError(f"run {run.id}: has no files yet (status {run.status})")
    home = lamp_home().resolve()
    folder = (home / run.artifact_dir).resolve()
    if not folder.is_relative_to(home):
        raise ArtifactError(f"run {run.id}: its recorded folder lies outside LAMP_HOME; refusing to open it")
    return folder


def artifact_path(run: Run, name: str) -> Path:
    """Path of one file or folder of a run's local folder, or ArtifactError saying why not."""
    folder = run_dir(run)
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or path == folder:
        raise ArtifactError(f"run {run.id}: {name} points outside the run folder; refusing to open it")
    if not path.exists():
        raise ArtifactError(f"run {run.id}: {name} was not written here (status {run.status})")
    return path
