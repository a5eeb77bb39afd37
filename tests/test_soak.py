"""The soak of issue 33: a fleet shot at for a short while keeps every invariant, and its checker sees each break.

The short soak runs 2 real workers on a private Redis and PostgreSQL of its own (it restarts them), with every
fault kind at least once; the checker's test builds each broken invariant by hand in a store, including the run
a worker left running when it died, which stays stuck until reconcile runs.
"""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from sqlalchemy import update

from bench.soak import FAULTS, SoakSettings, check_fleet, run_soak, soak_config
from store.db import session_scope
from store.files import store_run_file
from store.models import MetricPoint, Run, RunFile
from worker import queue

RESULT = {"history": {"train": [{"step": 1, "loss": 0.7}, {"step": 2, "loss": 0.6}],
                      "eval": [{"step": 2, "accuracy": 0.5}]}}


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_checker_sees_lost_stuck_duplicated_missing_and_corrupted_until_reconcile(lamp_home, redis_url, tmp_path):
    done, dead, corrupted = (queue.submit_run(soak_config(2, seed, None)) for seed in (1, 2, 3))
    (tmp_path / "result.json").write_text(json.dumps(RESULT))
    (tmp_path / "prompt.bin").write_bytes(b"prompt")
    with session_scope() as session:
        session.execute(update(Run).where(Run.id == done).values(status="succeeded"))
        store_run_file(session, done, "result.json", tmp_path / "result.json")
        session.add_all([MetricPoint(run_id=done, step=1, key="loss", value=0.7),
                         MetricPoint(run_id=done, step=1, key="loss", value=0.7),  # written twice
                         MetricPoint(run_id=done, step=2, key="loss", value=0.6)])  # eval_accuracy at 2 missing
        session.execute(update(Run).where(Run.id == dead).values(  # its worker was killed with it
            status="running", worker_host=socket.gethostname(), worker_pid=dead_pid()))
        store_run_file(session, corrupted, "prompt.bin", tmp_path / "prompt.bin")
        session.execute(update(RunFile).where(RunFile.run_id == corrupted).values(sha256="0" * 64))

    report = check_fleet([done, dead, corrupted, 999])
    assert report["lost"] == [999]
    assert list(report["stuck"]) == [dead] and "died" in report["stuck"][dead]
    assert {k: report["metric_points"][k] for k in ("duplicated", "missing", "extra")} == {
        "duplicated": 1, "missing": 1, "extra": 0}
    assert report["files"] == {"checked": 2, "bad": 1, "elsewhere": 0}
    assert len(report["broken"]) == 5, report["broken"]

    assert queue.reconcile() == [dead]  # what the soak runs before it checks: the dead run failed, queued again
    after = check_fleet([done, dead, corrupted, 999])
    assert after["stuck"] == {} and (after["failed"], after["retried"]) == (1, 1)
    assert list(after["failures"]) == [dead] and after["failures"][dead].startswith("reconcile: its worker process")
    assert len(after["broken"]) == 4 and not [line for line in after["broken"] if "stuck" in line]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_short_soak_shoots_every_fault_and_loses_nothing():
    settings = SoakSettings(minutes=0.75, workers=2, fault_every_s=6, steps=20, checkpoint_steps=4, backlog=1,
                            drain_s=240)
    report = run_soak(settings, log=print)
    assert report["broken"] == [], report
    assert all(report["faults"][kind] >= 1 for kind in FAULTS), report["faults"]
    assert report["submitted"] >= 3 and report["succeeded"] >= 1
    assert report["failed"] == sum(report["failed_reasons"].values())
