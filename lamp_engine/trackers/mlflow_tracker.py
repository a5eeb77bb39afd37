"""MLflow: each run becomes an MLflow run in LAMP_MLFLOW_EXPERIMENT (default "lamp-studio") of the tracking server
at LAMP_MLFLOW_TRACKING_URI. Params: the flat config; tags: who and what; metrics at their steps; the run's files
as artifacts, the PEFT adapter under peft/ (so `mlflow.artifacts.download_artifacts` gives a folder that
`PeftModel.from_pretrained` loads).

MLflow's client retries a failing request for minutes by itself; here a request fails fast (unless the
environment says otherwise) and the mirror's own back-off retries it, off the training loop.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from lamp_engine.trackers.core import MirrorState, Point, Snapshot

DEFAULT_EXPERIMENT = "lamp-studio"
MIRROR_TAG = "lamp_mirror"  # finds the run again when the answer to its creation was lost
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
PARAM_LIMIT = 6000  # characters MLflow keeps of a param's value


def from_environment() -> MlflowTracker:
    return MlflowTracker(os.environ["LAMP_MLFLOW_TRACKING_URI"].strip(),
                         os.environ.get("LAMP_MLFLOW_EXPERIMENT", "").strip() or DEFAULT_EXPERIMENT)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in MLflow's UI, for a server reached over HTTP (a local folder or database has none)."""
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return None
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


class MlflowTracker:
    name = "mlflow"

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        for variable, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)
        from mlflow import MlflowClient

        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.client = MlflowClient(tracking_uri)
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(self.experiment)
        except MlflowException:  # another worker created it meanwhile
            return self.client.get_experiment_by_name(self.experiment).experiment_id

    def open(self, snapshot: Snapshot, state: MirrorState) -> None:
        if self.run_id is not None:
            return
        if state.remote_id is not None:
            self.run_id = state.remote_id
            return
        from mlflow.entities import Param

        experiment_id = self._experiment_id()
        found = self.client.search_runs([experiment_id], f"tags.{MIRROR_TAG} = '{state.mirror_key}'", max_results=1)
        run = found[0] if found else self.client.create_run(
            experiment_id, start_time=snapshot.started_ms, run_name=snapshot.name,
            tags={**snapshot.tags, MIRROR_TAG: state.mirror_key})
        run_id = run.info.run_id
        params = [Param(key, str(value)[:PARAM_LIMIT]) for key, value in sorted(snapshot.params.items())]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a request
            self.client.log_batch(run_id, params=params[start:start + 100])
        state.remote_id, state.url = run_id, run_url(self.tracking_uri, experiment_id, run_id)
        self.run_id = run_id

    def send(self, snapshot: Snapshot, points: list[Point]) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[
            Metric(point.key, point.value, snapshot.point_time_ms(point.step), point.step) for point in points])

    def summarise(self, snapshot: Snapshot) -> None:
        """The costs and test metrics at the last step, and the tags known only at the end (the family of a hub
        model)."""
        from mlflow.entities import Metric, RunTag

        step, tags = snapshot.last_step, [RunTag(key, value) for key, value in snapshot.tags.items()]
        self.client.log_batch(self.run_id, tags=tags, metrics=[
            Metric(key, value, snapshot.point_time_ms(step), step) for key, value in sorted(snapshot.summary.items())])

    def upload(self, snapshot: Snapshot) -> None:
        for path in snapshot.files():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def close(self, snapshot: Snapshot) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(snapshot.status or "", "FINISHED"))
