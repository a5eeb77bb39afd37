"""Mirroring runs to the experiment trackers labs already use: MLflow and Weights & Biases (docs/trackers.md).

A tracker never harms a run. Sending happens on a background thread (`Mirror`) that reads what the run has
produced so far (a `Snapshot`) and sends what the tracker does not have yet (`sync`), remembering how far it got in
a `MirrorState` that its owner persists (the store for a worker's runs); a tracker that is down, slow or refuses
is retried with back-off and the training loop never waits for it. Each point carries a sequence number, so a
resend starts after the last point the tracker took, and a time derived from the run's start and its step, so a
batch whose answer was lost is recognised by MLflow and not stored twice.

Imports neither torch nor a tracker's package: each tracker's client is imported when a run is mirrored to it.
"""

from lamp_engine.trackers.core import (
    TRACKERS,
    Mirror,
    MirrorState,
    Point,
    Snapshot,
    Tracker,
    TrackerError,
    chosen,
    configured,
    make_tracker,
    sync,
)

__all__ = ["TRACKERS", "Mirror", "MirrorState", "Point", "Snapshot", "Tracker", "TrackerError", "chosen",
           "configured", "make_tracker", "sync"]
