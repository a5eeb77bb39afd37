"""Safe paths to a run's files: only names the store recorded for a run, resolved inside LAMP_HOME.

No path from user input is ever opened: the caller names one of ARTIFACT_NAMES, and the folder comes from the
run's row (written by the worker), checked to stay inside the data folder after resolving links.
"""

from __future__ import annotations

from pathlib import Path

from lamp_engine.errors import LampError
from store.db import lamp_home
from store.models import Run

ARTIFACT_NAMES = ("result.json", "prompt.safetensors", "peft", "dispersion.json")
PROMPT_FILES = ("prompt.safetensors", "peft", "result.json")


class ArtifactError(LampError):
    """A requested run file is not one the store recorded, or is missing."""


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
    """Path of one recorded file of a run (one of ARTIFACT_NAMES), or ArtifactError saying why not."""
    if name not in ARTIFACT_NAMES:
        raise ArtifactError(f"{name!r}: not a run file; choose one of {', '.join(ARTIFACT_NAMES)}")
    folder = run_dir(run)
    path = (folder / name).resolve()
    if not path.is_relative_to(folder):
        raise ArtifactError(f"run {run.id}: {name} points outside the run folder; refusing to open it")
    if not path.exists():
        raise ArtifactError(f"run {run.id}: {name} was not written (status {run.status})")
    return path
