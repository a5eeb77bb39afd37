"""Weights & Biases: each run becomes a W&B run in the project LAMP_WANDB_PROJECT (and the entity WANDB_ENTITY, if
set), in whatever mode the environment says: WANDB_MODE=offline writes local run files (under WANDB_DIR) that
`wandb sync` uploads later. Config: the flat config and who and what; history: the metrics at their steps; summary:
the costs and test metrics; the run's files as a "model" artifact.

wandb's own service buffers and retries the network; the W&B run's id is derived from the mirror's key, so opening
it again (another process, `lamp sync-trackers`) resumes the same run.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from lamp_engine.trackers.core import MirrorState, Point, Snapshot

ID_LENGTH = 16


def from_environment() -> WandbTracker:
    return WandbTracker(os.environ["LAMP_WANDB_PROJECT"].strip())


class WandbTracker:
    name = "wandb"

    def __init__(self, project: str) -> None:
        import wandb

        self.wandb, self.project, self.run = wandb, project, None

    def open(self, snapshot: Snapshot, state: MirrorState) -> None:
        if self.run is not None:
            return
        run_id = state.remote_id or state.mirror_key[:ID_LENGTH]
        self.run = self.wandb.init(
            project=self.project, id=run_id, resume="allow", reinit="create_new", name=snapshot.name,
            config={**snapshot.params, **snapshot.tags},
            tags=[f"{key}:{value}"[:64] for key, value in snapshot.tags.items()],  # W&B: 64 characters a tag
            settings=self.wandb.Settings(silent=True, console="off", x_disable_stats=True))
        state.remote_id = run_id
        state.url = self.run.url or str(Path(self.run.dir).parent)  # offline: the folder `wandb sync` takes

    def send(self, snapshot: Snapshot, points: list[Point]) -> None:
        """One history row per step, in step order (W&B drops a row whose step is below the last one)."""
        rows: dict[int, dict[str, float]] = defaultdict(dict)
        for point in points:
            rows[point.step][point.key] = point.value
        for step in sorted(rows):
            self.run.log(rows[step], step=step)

    def summarise(self, snapshot: Snapshot) -> None:
        self.run.summary.update(snapshot.summary)
        self.run.config.update(snapshot.tags, allow_val_change=True)  # the family of a hub model is known now

    def upload(self, snapshot: Snapshot) -> None:
        artifact = self.wandb.Artifact("lamp-" + re.sub(r"[^\w.-]+", "-", snapshot.key), type="model")
        for path in snapshot.files():
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            else:
                artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self, snapshot: Snapshot) -> None:
        self.run.finish(exit_code=0 if snapshot.status == "succeeded" else 1)
        self.run = None
