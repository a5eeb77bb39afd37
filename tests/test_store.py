"""The run store: migrations on SQLite and PostgreSQL, typed rows, queries and safe artifact paths."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, text

from store.artifacts import ArtifactError, artifact_path
from store.db import StoreError, dispose, get_engine, session_scope, upgrade
from store.models import MetricPoint, Run, Sweep, utcnow
from store.queries import UnknownRun, get_run, list_runs, metric_keys, metric_series, sweeps

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAD = "0007"
CONFIG = {"model": "tiny-t5", "task": "sst2", "prompt": {"method": "lamp"}, "train": {}, "data": {}}


def _revision(url: str) -> str:
    with get_engine(url).connect() as connection:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


def _new_run(**values) -> Run:
    defaults = {"config": CONFIG, "method": "lamp", "model": "tiny-t5", "task": "sst2", "status": "queued",
                "created_at": utcnow(), "progress": 0.0, "step": 0, "stop_requested": False}
    return Run(**{**defaults, **values})


def test_upgrade_creates_the_schema_on_an_empty_database(database_url):
    upgrade(database_url)
    inspector = inspect(get_engine(database_url))
    assert set(inspector.get_table_names()) == {"alembic_version", "runs", "metric_points", "sweeps", "blobs",
                                                 "run_files", "uploads", "accounts", "login_failures", "run_actions",
                                                 "tracker_mirrors"}
    assert _revision(database_url) == HEAD
    run_columns = {column["name"] for column in inspector.get_columns("runs")}
    assert {"worker_host", "worker_pid", "stop_requested", "main_metric_value", "artifact_dir", "submitted_by",
            "checkpoint_step", "resumed_from_step", "deleted_at"} <= run_columns
    assert {index["name"] for index in inspector.get_indexes("runs")} == {"ix_runs_status", "ix_runs_created_at"}
    assert [index["column_names"] for index in inspector.get_indexes("metric_points")] == [["run_id", "key", "step"]]


def test_upgrade_from_the_previous_revision_keeps_rows(database_url):
    upgrade(database_url, revision="0001")
    engine = get_engine(database_url)
    assert "worker_host" not in {column["name"] for column in inspect(engine).get_columns("runs")}
    runs = inspect(engine).get_columns("runs")
    assert runs  # the 0001 table exists
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO runs (created_at, status, config, method, model, task, progress, step, stop_requested) "
            "VALUES (:now, 'succeeded', :config, 'lamp', 'tiny-t5', 'sst2', 1.0, 7, false)"),
            {"now": utcnow(), "config": '{"model": "tiny-t5"}'})
    upgrade(database_url)
    assert _revision(database_url) == HEAD
    with session_scope(database_url) as session:
        (run,) = list_runs(session)
        assert (run.status, run.step, run.config, run.worker_host, run.worker_pid) == (
            "succeeded", 7, {"model": "tiny-t5"}, None, None)


def test_rows_round_trip_with_utc_times_and_queries(database_url):
    with session_scope() as session:
        sweep = Sweep(name="ranks", grid={"rank": [2, 4]}, created_at=utcnow())
        session.add(sweep)
        session.flush()
        first, second = _new_run(sweep_id=sweep.id), _new_run(status="succeeded", metrics={"accuracy": 0.5})
        session.add_all([first, second])
        session.flush()
        session.execute(insert(MetricPoint), [
            {"run_id": first.id, "step": step, "key": key, "value": step * factor}
            for step in (3, 1, 2) for key, factor in (("loss", 1.0), ("eval_accuracy", 0.1))])
        ids = (first.id, second.id)
    with session_scope() as session:
        run = get_run(session, ids[0])
        assert run.created_at.tzinfo == UTC and run.config == CONFIG
        assert [r.id for r in list_runs(session)] == [ids[1], ids[0]]
        assert [r.id for r in list_runs(session, status="succeeded")] == [ids[1]]
        assert [r.id for r in list_runs(session, ids=[ids[0]], limit=1)] == [ids[0]]
        assert metric_series(session, [ids[0]]) == [(ids[0], 1, 1.0), (ids[0], 2, 2.0), (ids[0], 3, 3.0)]
        assert metric_keys(session, ids) == ["eval_accuracy", "loss"]
        assert [s.grid for s in sweeps(session)] == [{"rank": [2, 4]}]
        with pytest.raises(UnknownRun, match=r"^run 999: no such run"):
            get_run(session, 999)


def test_sqlite_store_uses_wal_and_a_busy_timeout(lamp_home):
    with session_scope() as session:
        assert session.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert session.execute(text("PRAGMA busy_timeout")).scalar_one() >= 10_000
    assert (lamp_home / "lamp.db").exists()


def test_artifact_paths_only_resolve_files_inside_the_run_folder(lamp_home):
    folder = lamp_home / "runs" / "1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("{}")
    (lamp_home / "secret.txt").write_text("no")
    run = _new_run(id=1, artifact_dir="runs/1", status="succeeded")
    assert artifact_path(run, "result.json") == (folder / "result.json").resolve()
    with pytest.raises(ArtifactError, match="points outside the run folder"):
        artifact_path(run, "../../secret.txt")
    with pytest.raises(ArtifactError, match="was not written"):
        artifact_path(run, "dispersion.json")
    with pytest.raises(ArtifactError, match="outside LAMP_HOME"):
        artifact_path(_new_run(id=2, artifact_dir="../../etc", status="succeeded"), "result.json")
    (folder / "peft").symlink_to("/etc")
    with pytest.raises(ArtifactError, match="outside the run folder"):
        artifact_path(run, "peft")
    with pytest.raises(ArtifactError, match="has no files yet"):
        artifact_path(_new_run(id=3), "result.json")


@pytest.mark.parametrize("url", ["nonsense", "postgresql+psycopg://nobody@127.0.0.1:1/none"])
def test_bad_database_url_is_one_clear_line(lamp_home, url):
    env = {"PATH": "/usr/bin:/bin", "LAMP_HOME": str(lamp_home), "DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "lamp_cli", "runs"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("lamp runs: DATABASE_URL: ")


def test_a_schema_from_a_newer_release_is_one_clear_error(lamp_home):
    upgrade()
    with get_engine().begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    dispose()
    with pytest.raises(StoreError, match="schema cannot be upgraded .*newer"):
        upgrade()


def test_lamp_migrate_upgrades_and_reports_the_revision(database_url):
    import os

    done = subprocess.run([sys.executable, "-m", "lamp_cli", "migrate"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("is at the newest schema") and _revision(database_url) == HEAD
