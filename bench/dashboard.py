"""`lamp bench dashboard`: how long each dashboard view takes to reach idle in a real browser with a large store.

The goal (issue 33): with 10,000 runs and 1,000,000 metric points, every view idle within 1 second (--budget-s,
the median of --repeat loads) and a page load within 2 seconds (--load-budget-s). Fills a new store (SQLite under
a fresh LAMP_HOME, or DATABASE_URL where set) with runs of every status, gives the newest finished soft-prompt runs
the token files a trained run keeps, serves the dashboard as `lamp up` starts it, bound to loopback, and loads each
view in Debian's Chromium through Playwright (bench/browser.py, as the browser tests do), two ways: switched to
from another view in the open dashboard (what the sidebar, a link or Back does: the same session runs the
address's page; the 1 s budget) and opened from its address (a full page load: the page, Streamlit's scripts and
a new session; the 2 s budget, as the first load). A load is timed in the browser, from the start of the
navigation to the moment Streamlit reports that the script run it triggered has finished (the app's script state
going from running to not running). The first load is a new browser's first page on a server just started as
`lamp up` starts it (which draws its first page once before it prints the address), median of --repeat servers.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from typing import IO, Any

import numpy as np
from safetensors.numpy import save_file

from bench.browser import CHROMIUM, launch_browser, streamlit_app
from lamp_engine.errors import ConfigError
from lamp_engine.methods import METHODS, MethodFamily
from store.status import RunStatus

COMPARED = 20  # the runs of the larger Compare and of the Curves view
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
    budget_s: float = 1.0  # a view switched to in the open dashboard (sidebar, link, Back)
    load_budget_s: float = 2.0  # a full page load: the first one, or a view opened from its address

    def check(self) -> None:
        if self.runs < MIN_RUNS or self.points < 0 or self.repeat < 1:
            raise ConfigError(f"dashboard: --runs must be at least {MIN_RUNS}, --points at least 0 and --repeat at "
                              f"least 1 (got {self.runs}, {self.points}, {self.repeat})")
        if not Path(CHROMIUM).exists() or importlib.util.find_spec("playwright") is None:
            raise ConfigError(f"dashboard: the timings need Chromium at {CHROMIUM} and Playwright: `apt-get install "
                              "chromium` and `pip install -e '.[dev]'`")


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


def timed_views(ids: list[int], finished: list[int]) -> dict[str, str]:
    """Each view with the address a user opens it with: {name: path and query}."""
    def joined(chosen: list[int]) -> str:
        return ",".join(map(str, chosen))

    newest = ids[-COMPARED:]
    return {
        "Runs": "",
        "Runs (filtered: succeeded lamp runs, page 3)": "?status=succeeded&method=lamp&page=3",
        "Launch": "launch",
        f"Compare ({len(finished[-4:])} runs)": f"compare?runs={joined(finished[-4:])}",
        f"Compare ({len(newest)} runs)": f"compare?runs={joined(newest)}",
        f"Curves ({len(newest)} runs, eval_accuracy)": f"compare?runs={joined(newest)}&curve=eval_accuracy",
        "Dispersion (PT vs LAMP, t-SNE)": "dispersion",
        f"Dispersion ({len(finished)} runs, PCA)": f"dispersion?runs={joined(finished)}",
        "Run page": f"run?id={finished[-1]}",
    }


# Set in the page before any script of it runs: the time (ms since the navigation started) at which the app's
# script state first goes from running to not running, i.e. the view has been drawn and is idle.
IDLE_CLOCK = """
window.lampIdleAt = null;
window.lampStartedAt = 0;
new MutationObserver(records => {
  for (const record of records) {
    if (window.lampIdleAt === null && record.oldValue === "running"
        && record.target.getAttribute("data-test-script-state") === "notRunning") {
      window.lampIdleAt = performance.now();
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""
FAILED = "[data-testid='stException'], [data-testid='stAlertContentError']"
IDLE_TIMEOUT_S = 180


def became_idle(page: Any, within_s: float) -> bool:
    """Whether the view became idle within `within_s` seconds (Playwright is imported only when a bench runs)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("window.lampIdleAt !== null", timeout=within_s * 1000)
    except PlaywrightTimeout:
        return False
    return True


def idle_seconds(page: Any, address: str) -> float:
    """Seconds from the clock's start to the view being idle. A view that shows an exception or an error is
    refused, so a timing never measures an error page."""
    if not became_idle(page, IDLE_TIMEOUT_S):
        state = page.locator("[data-test-script-state]").first.get_attribute("data-test-script-state")
        raise ConfigError(f"dashboard: {address} was not idle after {IDLE_TIMEOUT_S} s (script state {state})")
    seconds = page.evaluate("window.lampIdleAt - window.lampStartedAt") / 1000
    if page.locator(FAILED).count():
        shown = page.locator(FAILED).first.inner_text().strip().splitlines()
        raise ConfigError(f"dashboard: {address} failed: {shown[0] if shown else 'an error is shown'}")
    return seconds


def opened_seconds(page: Any, address: str) -> float:
    """A view opened from its address: a full page load (the page, Streamlit's scripts, a new session)."""
    page.goto(address)
    return idle_seconds(page, address)


# An in-app move to an address, as the sidebar, a link or the browser's Back button makes it: Streamlit's frontend
# answers a history change by running the address's page with its query, in the same session and page.
SWITCH = """address => {
  window.lampIdleAt = null;
  window.lampStartedAt = performance.now();
  history.pushState(null, "", address);
  dispatchEvent(new PopStateEvent("popstate"));
}"""
AGAIN = """() => dispatchEvent(new PopStateEvent("popstate"))"""
SWITCH_AGAIN_S = 30


def switched_seconds(page: Any, address: str) -> float:
    """A view switched to from another one in the open dashboard. A move the frontend lets pass without running the
    page (2 of some 400 switches, cause unknown) is made again after SWITCH_AGAIN_S, its time counted from the first
    move, so it shows as a slow switch instead of stopping the bench."""
    page.evaluate(SWITCH, address)
    if not became_idle(page, SWITCH_AGAIN_S):
        page.evaluate(AGAIN)
    return idle_seconds(page, address)


@contextlib.contextmanager
def timed_page(playwright: Any) -> Iterator[Any]:
    """A page of a new Chromium that carries the idle clock."""
    browser = launch_browser(playwright)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(IDLE_CLOCK)
        yield context.new_page()
    finally:
        browser.close()


def first_load(env: dict[str, str], server_log: IO[Any]) -> float:
    """A new browser's first page (Runs) on a dashboard just started as `lamp up` starts it."""
    from playwright.sync_api import sync_playwright

    with streamlit_app(env, server_log) as url, sync_playwright() as playwright, timed_page(playwright) as page:
        return opened_seconds(page, url)


def time_views(url: str, views: dict[str, str], repeat: int) -> dict[str, dict[str, list[float]]]:
    """`repeat` rounds in one browser page (its first page untimed: the first load is timed on its own), each
    opening every view from its address and then going from view to view in the app."""
    from playwright.sync_api import sync_playwright

    seconds: dict[str, dict[str, list[float]]] = {name: {"switched": [], "opened": []} for name in views}
    with sync_playwright() as playwright, timed_page(playwright) as page:
        opened_seconds(page, url)
        for _ in range(repeat):
            for name, path in views.items():
                seconds[name]["opened"].append(opened_seconds(page, f"{url}/{path}"))
            for name, path in views.items():
                seconds[name]["switched"].append(switched_seconds(page, f"/{path}"))
    return seconds


def check_new_home(given: str | None) -> None:
    if given and Path(given).exists() and any(Path(given).iterdir()):
        raise ConfigError(f"dashboard: --home {given} is not empty; give a new folder (it gets made-up runs)")


@contextlib.contextmanager
def bench_home(given: str | None) -> Iterator[Path]:
    """LAMP_HOME for the made-up store: `given` (a new or empty folder, kept: `check_new_home` first) or a temporary
    one (deleted). The embedded Redis started there, where REDIS_URL is unset, is stopped at the end."""
    from store.db import database_url, dispose
    from worker.connection import stop_embedded_redis

    home = Path(given) if given else Path(tempfile.mkdtemp(prefix="lamp-bench-dashboard-"))
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
    """Fill the store, serve the dashboard, time every view in Chromium; the report holds each load's seconds,
    their median and worst, and the machine's load average around the timings (other work inflates them)."""
    from app.launcher import prepare_services
    from lamp_common.urls import redacted_url
    from store.db import database_url

    check_new_home(home)  # the flags first, then what the machine lacks
    settings.check()
    with bench_home(home) as folder:
        started = time.perf_counter()
        ids, finished, points = fill_store(folder, settings.runs, settings.points)
        fill_seconds = time.perf_counter() - started
        store = redacted_url(database_url())
        log(f"filled {len(ids):,} runs and {points:,} metric points in {fill_seconds:.1f} s ({store})")
        redis, owner = prepare_services()  # the store upgraded and Redis up before the dashboard, as `lamp up` does
        load_before = os.getloadavg()[0]
        env = {**os.environ, "LAMP_HOME": str(folder), "REDIS_URL": redis}
        with (owner or contextlib.nullcontext()), (folder / "dashboard.log").open("w") as server_log:
            firsts = [round(first_load(env, server_log), 4) for _ in range(settings.repeat)]
            with streamlit_app(env, server_log) as url:
                timings = time_views(url, timed_views(ids, finished), settings.repeat)
        first = statistics.median(firsts)
        log(f"first load: median {first:.3f} s of {', '.join(f'{s:.3f}' for s in firsts)}")
        views = [view_row(name, seconds) for name, seconds in timings.items()]
        for row in views:
            log(f"{row['view']}: median {row['switched']['median_s']:.3f} s switched to, "
                f"{row['opened']['median_s']:.3f} s opened from its address")
    return {"settings": asdict(settings), "store": store, "runs": len(ids), "points": points,
            "fill_seconds": round(fill_seconds, 2), "first_load_s": round(first, 3), "first_loads_s": firsts,
            "views": views, "cpus": os.cpu_count(),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def view_row(name: str, seconds: dict[str, list[float]]) -> dict:
    """One view's timings: for each way of reaching it, every load's seconds, their median and the worst."""
    row: dict[str, Any] = {"view": name}
    for way, taken in seconds.items():
        taken = [round(t, 4) for t in taken]
        row[way] = {"median_s": round(statistics.median(taken), 3), "max_s": round(max(taken), 3), "seconds": taken}
    return row


def over_budget(report: dict) -> list[str]:
    """'name (s)' for each view whose median switch took longer than the budget, each whose median page load took
    longer than the page-load budget, and a first load over the page-load budget."""
    settings = report["settings"]
    slow = [f"{row['view']} ({row['switched']['median_s']:.3f} s)" for row in report["views"]
            if row["switched"]["median_s"] > settings["budget_s"]]
    slow += [f"{row['view']} opened from its address ({row['opened']['median_s']:.3f} s, budget "
             f"{settings['load_budget_s']:g} s)" for row in report["views"]
             if row["opened"]["median_s"] > settings["load_budget_s"]]
    if report["first_load_s"] > settings["load_budget_s"]:
        slow.append(f"first load ({report['first_load_s']:.3f} s, budget {settings['load_budget_s']:g} s)")
    return slow


def markdown(report: dict) -> str:
    settings, repeat = report["settings"], report["settings"]["repeat"]
    lines = [f"Dashboard views, time to idle in Chromium: {report['runs']:,} runs and {report['points']:,} metric "
             f"points in {report['store'].split(':')[0]} (filled in {report['fill_seconds']:.1f} s); median of "
             f"{repeat}; budget {settings['budget_s']:g} s for a view switched to in the open dashboard, "
             f"{settings['load_budget_s']:g} s for a page load; {report['cpus']} CPUs, load average "
             f"{report['load_average'][0]:g} before and {report['load_average'][1]:g} after.", "",
             f"| view | switched to (s) | worst of {repeat} | opened from its address (s) | worst of {repeat} |",
             "|---|---|---|---|---|",
             f"| first load (Runs, new browser and server) | | | {report['first_load_s']:.3f} | "
             f"{max(report['first_loads_s']):.3f} |"]
    lines += [f"| {row['view']} | {row['switched']['median_s']:.3f} | {row['switched']['max_s']:.3f} | "
              f"{row['opened']['median_s']:.3f} | {row['opened']['max_s']:.3f} |" for row in report["views"]]
    return "\n".join(lines) + "\n"
