"""How long each dashboard view takes to render with 2,000 runs and 200,000 metric points in the store.

The goal: every view under 2 seconds. Fills a fresh SQLite store (or DATABASE_URL if given) under a
temporary LAMP_HOME, renders each view with Streamlit's AppTest (the same script run a browser request
triggers, without the network), and prints and saves the median and worst of several renders per view.

    .venv/bin/python bench/bench_dashboard.py [--runs 2000] [--points 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lamp_engine.methods import METHODS  # noqa: E402
from store.status import RunStatus  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MAIN = str(ROOT / "app" / "main.py")
STATUS_SHARES = ((RunStatus.SUCCEEDED, 0.95), (RunStatus.FAILED, 0.02), (RunStatus.CANCELLED, 0.015),
                 (RunStatus.QUEUED, 0.01), (RunStatus.RUNNING, 0.005))
TASKS = ("sst2", "cb", "rte", "boolq", "copa", "wic", "wsc", "multirc")


def run_rows(count: int) -> list[dict]:
    """Runs of every status over methods x tasks x seeds, with realistic measurements."""
    rng = np.random.default_rng(0)
    statuses = [s for s, share in STATUS_SHARES for _ in range(round(share * count))]
    statuses += [RunStatus.SUCCEEDED] * (count - len(statuses))
    statuses = [str(s) for s in rng.permutation(statuses)]
    start = datetime(2025, 11, 1, tzinfo=UTC)
    rows = []
    for i, status in enumerate(statuses):
        method, task, seed = list(METHODS)[i % len(METHODS)], TASKS[(i // 5) % 8], i // 40
        done = status == RunStatus.SUCCEEDED
        value = float(rng.normal(75, 5)) if done else None
        rows.append({
            "created_at": start + timedelta(minutes=i), "status": status, "method": method, "model": "smollm2-135m",
            "task": task, "config": {"model": "smollm2-135m", "task": task,
                                     "method": {"method": method, "length": 100},
                                     "train": {"seed": seed, "lr": 0.01, "batch_size": 8}, "data": {}},
            "progress": 1.0 if done else 0.4, "step": 150 if done else 60, "total_steps": 150,
            "trainable_params": 5192 if method == "lamp" else 57600, "prompt_tokens": 100, "hidden_size": 576,
            "train_seconds": float(rng.uniform(300, 600)) if done else None, "step_seconds_median": 2.5,
            "peak_memory_mb": float(rng.uniform(900, 1200)), "metrics": {"accuracy": value} if done else None,
            "main_metric": "accuracy" if done else None, "main_metric_value": value,
            "error": "TrainingDiverged: the loss became NaN at step 12" if status == RunStatus.FAILED else None,
            "stop_requested": False,
        })
    return rows


def fill_store(home: Path, runs: int, points: int) -> tuple[list[int], list[int]]:
    """Insert the runs and their metric points in bulk; returns all ids and the 10 newest succeeded runs,
    which get dispersion files."""
    from sqlalchemy import insert, select

    from store.db import session_scope
    from store.models import MetricPoint, Run

    with session_scope() as session:
        session.execute(insert(Run), run_rows(runs))
        ids = list(session.scalars(select(Run.id).order_by(Run.id)))
        finished = list(session.scalars(select(Run.id).where(Run.status == RunStatus.SUCCEEDED).order_by(Run.id)))[-10:]
    per_run = points // len(ids)
    steps = np.arange(1, per_run + 1)
    with session_scope() as session:
        for chunk in range(0, len(ids), 200):
            batch = [{"run_id": run_id, "step": int(s), "key": "loss" if s % 10 else "eval_accuracy",
                      "value": float(1.0 / s)} for run_id in ids[chunk:chunk + 200] for s in steps]
            session.execute(insert(MetricPoint), batch)
    write_dispersion(home, finished)
    return ids, finished


def write_dispersion(home: Path, ids: list[int]) -> None:
    from sqlalchemy import update

    from store.db import session_scope
    from store.models import Run

    rng = np.random.default_rng(1)
    for run_id in ids:
        folder = home / "runs" / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        coords = {phase: rng.normal(size=(100, 2)).tolist() for phase in ("before", "after")}
        figure = {"before": {"mean_pairwise_distance": 1.0, "covariance_trace": 1.0},
                  "after": {"mean_pairwise_distance": 1.2, "covariance_trace": 1.5}}
        (folder / "dispersion.json").write_text(json.dumps({"pca": coords, "tsne": coords, "figure": figure}))
        with session_scope() as session:
            session.execute(update(Run).where(Run.id == run_id).values(artifact_dir=f"runs/{run_id}"))


def time_view(page: str, query: dict[str, str], repeat: int) -> list[float]:
    """Seconds per render of one view: the first switch to it, then reruns (as a refresh would)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.query_params.update(query)
    at.switch_page(f"views/{page}.py")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].message}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lamp-bench-"))
    os.environ["LAMP_HOME"] = str(home)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{home / 'lamp.db'}")
    started = time.perf_counter()
    ids, finished = fill_store(home, args.runs, args.points)
    print(f"filled {args.runs:,} runs and {args.points:,} metric points in {time.perf_counter() - started:.1f} s "
          f"({os.environ['DATABASE_URL'].split(':')[0]})")
    views = {
        "Runs": ("runs", {}),
        "Launch": ("launch", {}),
        "Compare (5 runs)": ("compare", {"runs": ",".join(map(str, finished[-5:]))}),
        "Compare (40 runs)": ("compare", {"runs": ",".join(map(str, ids[:40]))}),
        "Dispersion (10 runs)": ("dispersion", {"runs": ",".join(map(str, finished))}),
        "Run page": ("run", {"id": str(finished[-1])}),
    }
    rows = []
    for name, (page, query) in views.items():
        times = time_view(page, query, args.repeat)
        rows.append({"view": name, "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)})
    print(f"\n| view | median render (s) | worst of {args.repeat} (s) |\n|---|---|---|")
    for row in rows:
        print(f"| {row['view']} | {row['median_s']:.3f} | {row['max_s']:.3f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "dashboard.json"
    out.write_text(json.dumps({"runs": args.runs, "points": args.points, "views": rows}, indent=2) + "\n")
    print(f"\nsaved {out.relative_to(ROOT)}")
    return 0 if all(row["max_s"] < 2.0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
