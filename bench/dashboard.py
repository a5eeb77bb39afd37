"""`lamp bench dashboard`: how long each dashboard view takes to render with a store of many runs.

The goal: every view under 2 seconds (--budget-s) with 2,000 runs and 200,000 metric points. Fills a new store
(SQLite under a fresh LAMP_HOME, or DATABASE_URL where set) with runs of every status, gives the newest finished
soft-prompt runs the token files a trained run keeps, renders each view with Streamlit's AppTest (the script run a
browser request triggers, without the network) bound to loopback as `lamp up` binds it, and reports the median
and worst of several renders per view.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

import app
from lamp_engine.errors import ConfigError
from lamp_engine.methods import METHODS, MethodFamily
from store.status import RunStatus

MAIN = Path(app.__file__).resolve().parent / "main.py"
MIN_RUNS = 20  # enough for every status and every view to have finished soft-prompt runs to show
WITH_TOKENS = 10  # the newest finished soft-prompt runs that get token files (the Dispersion view's default size)
STATUS_SHARES = ((RunStatus.SUCCEEDED, 0.95), (RunStatus.FAILED, 0.02), (RunStatus.CANCELLED, 0.015),
                 (RunStatus.QUEUED, 0.01), (RunStatus.RUNNING, 0.005))
TASKS = ("sst2", "cb", "rte", "boolq", "copa", "wic", "wsc", "multirc")
PROMPT_TOKENS, HIDDEN = 100, 576  # PT at l = 100 on smollm2-135m


@dataclass(frozen=True)
class DashboardSettings:
    runs: int = 2000
    points: int = 200_000
    repeat: int = 5
    budget_s: float = 2.0

    def check(self) -> None:
        if self.runs < MIN_RUNS or self.points < 0 or self.repeat < 1:
            raise ConfigError(f"dashboard: --runs must be at least {MIN_RUNS}, --points at least 0 and --repeat at "
                              f"least 1 (got {self.runs}, {self.points}, {self.repeat})")


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
                                     "method": {"method": method, "length": PROMPT_TOKENS},
                                     "train": {"seed": seed, "lr": 0.01, "batch_size": 8}, "data": {}},
            "progress": 1.0 if done else 0.4, "step": 150 if done else 60, "total_steps": 150,
            "trainable_params": 5192 if method == "lamp" else 57600, "prompt_tokens": PROMPT_TOKENS,
            "hidden_size": HIDDEN, "train_seconds": float(rng.uniform(300, 600)) if done else None,
            "step_seconds_median": 2.5, "peak_memory_mb": float(rng.uniform(900, 1200)),
            "metrics": {"accuracy": value} if done else None, "main_metric": "accuracy" if done else None,
            "main_metric_value": value,
            "error": "TrainingDiverged: the loss became NaN at step 12" if status == RunStatus.FAILED else None,
            "stop_requested": False,
        })
    return rows


def fill_store(home: Path, runs: int, points: int) -> tuple[list[int], list[int], int]:
    """Insert the runs and their metric points in bulk. Returns all ids, the newest finished soft-prompt runs
    (which get token files) and the number of points inserted (`points` spread evenly, rounded down per run)."""
    from sqlalchemy import insert, select

    from store.db import session_scope
    from store.models import MetricPoint, Run

    soft_prompts = [name for name, kind in METHODS.items() if kind.family is MethodFamily.SOFT_PROMPT]
    with session_scope() as session:
        session.execute(insert(Run), run_rows(runs))
        ids = list(session.scalars(select(Run.id).order_by(Run.id)))
        finished = list(session.scalars(select(Run.id).where(Run.status == RunStatus.SUCCEEDED,
                                                             Run.method.in_(soft_prompts)).order_by(Run.id)))
    steps = np.arange(1, points // len(ids) + 1)
    with session_scope() as session:
        for chunk in range(0, len(ids), 200):
            batch = [{"run_id": run_id, "step": int(s), "key": "loss" if s % 10 else "eval_accuracy",
                      "value": float(1.0 / s)} for run_id in ids[chunk:chunk + 200] for s in steps]
            if batch:
                session.execute(insert(MetricPoint), batch)
    with_tokens = finished[-WITH_TOKENS:]
    write_token_files(home, with_tokens)
    return ids, with_tokens, len(steps) * len(ids)


def write_token_files(home: Path, ids: list[int]) -> None:
    """tokens.safetensors and dispersion.json as a trained soft prompt keeps them, stored like a finished run's."""
    from sqlalchemy import update

    from store.db import session_scope
    from store.files import store_run_folder
    from store.models import Run

    rng = np.random.default_rng(1)
    figures = {"before": {"mean_pairwise_distance": 1.0, "covariance_trace": 1.0},
               "after": {"mean_pairwise_distance": 1.2, "covariance_trace": 1.5}}
    for run_id in ids:
        folder = home / "runs" / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({f"{phase}.prompt": rng.normal(size=(PROMPT_TOKENS, HIDDEN)).astype(np.float32)
                   for phase in ("before", "after")}, str(folder / "tokens.safetensors"))
        (folder / "dispersion.json").write_text(json.dumps({"prompt": figures}))
        store_run_folder(run_id, folder)
        with session_scope() as session:
            session.execute(update(Run).where(Run.id == run_id).values(artifact_dir=f"runs/{run_id}"))


def timed_views(ids: list[int], finished: list[int]) -> dict[str, tuple[str, dict[str, str]]]:
    """Each view with the query a user opens it with: {name: (page, query parameters)}."""
    def joined(chosen: list[int]) -> str:
        return ",".join(map(str, chosen))

    many = ids[:40]
    return {
        "Runs": ("runs", {}),
        "Launch": ("launch", {}),
        f"Compare ({len(finished[-5:])} runs)": ("compare", {"runs": joined(finished[-5:])}),
        f"Compare ({len(many)} runs)": ("compare", {"runs": joined(many)}),
        f"Dispersion ({len(finished)} runs)": ("dispersion", {"runs": joined(finished)}),
        "Run page": ("run", {"id": str(finished[-1])}),
    }


def time_view(page: str, query: dict[str, str], repeat: int) -> list[float]:
    """Seconds per render of one view: the first switch to it, then reruns (as a refresh would). A view that
    fails or shows an error is refused, so a timing never measures an error page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(MAIN), default_timeout=120)
    at.run()
    at.query_params.update(query)
    at.switch_page(f"views/{page}.py")
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        if at.exception or at.error:
            shown = [e.message for e in at.exception] + [e.value for e in at.error]
            raise ConfigError(f"dashboard: the {page} view failed: {shown[0]}")
    return times


@contextlib.contextmanager
def loopback_dashboard() -> Iterator[None]:
    """The app bound to 127.0.0.1, as `lamp up` binds it: on any other address it asks for a login first."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        yield
    finally:
        config.set_option("server.address", before)


@contextlib.contextmanager
def bench_home(given: str | None) -> Iterator[Path]:
    """LAMP_HOME for the made-up store: `given` (a new or empty folder, kept) or a temporary one (deleted). The
    embedded Redis the views start there, where REDIS_URL is unset, is stopped at the end."""
    from store.db import database_url, dispose
    from worker.connection import stop_embedded_redis

    home = Path(given) if given else Path(tempfile.mkdtemp(prefix="lamp-bench-dashboard-"))
    if given and home.exists() and any(home.iterdir()):
        raise ConfigError(f"dashboard: --home {home} is not empty; give a new folder (it gets made-up runs)")
    home.mkdir(parents=True, exist_ok=True)
    before = os.environ.get("LAMP_HOME")
    os.environ["LAMP_HOME"] = str(home)
    try:
        yield home
    finally:
        if not os.environ.get("REDIS_URL"):
            stop_embedded_redis()
        dispose(database_url())
        if before is None:
            del os.environ["LAMP_HOME"]
        else:
            os.environ["LAMP_HOME"] = before
        if not given:
            shutil.rmtree(home, ignore_errors=True)


def run_dashboard(settings: DashboardSettings, home: str | None = None,
                  log: Callable[[str], None] = print) -> dict:
    """Fill the store, time every view; the report holds each render's seconds, their median and worst."""
    from lamp_common.urls import redacted_url
    from store.db import database_url

    settings.check()
    with bench_home(home) as folder:
        started = time.perf_counter()
        ids, finished, points = fill_store(folder, settings.runs, settings.points)
        fill_seconds = time.perf_counter() - started
        store = redacted_url(database_url())
        log(f"filled {len(ids):,} runs and {points:,} metric points in {fill_seconds:.1f} s ({store})")
        views = []
        with loopback_dashboard():
            for name, (page, query) in timed_views(ids, finished).items():
                seconds = [round(t, 4) for t in time_view(page, query, settings.repeat)]
                views.append({"view": name, "median_s": round(statistics.median(seconds), 3),
                              "max_s": round(max(seconds), 3), "seconds": seconds})
                log(f"{name}: median {views[-1]['median_s']:.3f} s")
    return {"settings": asdict(settings), "store": store, "runs": len(ids), "points": points,
            "fill_seconds": round(fill_seconds, 2), "views": views}


def over_budget(report: dict) -> list[str]:
    """The views whose worst render took longer than the budget, as 'name (seconds)'."""
    budget = report["settings"]["budget_s"]
    return [f"{row['view']} ({row['max_s']:.3f} s)" for row in report["views"] if row["max_s"] > budget]


def markdown(report: dict) -> str:
    repeat, budget = report["settings"]["repeat"], report["settings"]["budget_s"]
    lines = [f"Dashboard render times: {report['runs']:,} runs and {report['points']:,} metric points in "
             f"{report['store'].split(':')[0]} (filled in {report['fill_seconds']:.1f} s); budget {budget:g} s.", "",
             f"| view | median render (s) | worst of {repeat} (s) |", "|---|---|---|"]
    lines += [f"| {row['view']} | {row['median_s']:.3f} | {row['max_s']:.3f} |" for row in report["views"]]
    return "\n".join(lines) + "\n"
