"""`lamp bench dashboard` at a small size: the made-up runs really land in the store, every view is loaded and
timed in Chromium, and the report goes to ./bench-results/ under the current directory; the budgets name each slow
view and the first load."""

import json
import sqlite3
from pathlib import Path

import pytest

from bench.browser import CHROMIUM
from bench.cli import main
from bench.dashboard import WITH_TOKENS, bench_home, over_budget
from lamp_engine.methods import METHODS, MethodFamily

SOFT_PROMPTS = ", ".join(f"'{name}'" for name, kind in METHODS.items() if kind.family is MethodFamily.SOFT_PROMPT)


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    """The folder the bench runs in, with no DATABASE_URL or REDIS_URL: SQLite and the embedded Redis."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "REDIS_URL", "LAMP_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def count(db: sqlite3.Connection, query: str) -> int:
    return db.execute(query).fetchone()[0]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`")
@pytest.mark.timeout(300)
def test_dashboard_fills_the_store_and_times_every_view_in_chromium(bench_dir, monkeypatch, capsys):
    home = bench_dir / "home"
    assert main(["bench", "dashboard", "--runs", "24", "--points", "500", "--repeat", "1", "--budget-s", "600",
                 "--load-budget-s", "600", "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    report = json.loads((bench_dir / "bench-results" / "dashboard.json").read_text())
    with sqlite3.connect(home / "lamp.db") as db:
        assert count(db, "select count(*) from runs") == report["runs"] == 24
        assert count(db, "select count(*) from metric_points") == report["points"] == 24 * (500 // 24)
        finished = count(db, f"select count(*) from runs where status = 'succeeded' and method in ({SOFT_PROMPTS})")
        with_tokens = count(db, "select count(distinct run_id) from run_files where name = 'tokens.safetensors'")
    assert with_tokens == min(finished, WITH_TOKENS) > 5
    assert f"filled 24 runs and {report['points']} metric points in " in err
    assert report["store"] == f"sqlite:///{home / 'lamp.db'}"
    assert report["settings"] == {"runs": 24, "points": 500, "repeat": 1, "budget_s": 600.0,
                                  "load_budget_s": 600.0}
    views = ["Runs", "Runs (filtered: succeeded lamp runs, page 3)", "Launch", "Compare (4 runs)",
             "Compare (20 runs)", "Curves (20 runs, eval_accuracy)", "Dispersion (PT vs LAMP, t-SNE)",
             f"Dispersion ({with_tokens} runs, PCA)", "Run page"]
    assert [row["view"] for row in report["views"]] == views
    assert 0 < report["first_load_s"] < 600 and report["cpus"] >= 1 and len(report["load_average"]) == 2
    assert report["first_load_s"] == round(report["first_loads_s"][0], 3) and len(report["first_loads_s"]) == 1
    for row in report["views"]:
        for way in ("switched", "opened"):
            assert len(row[way]["seconds"]) == 1 and 0 < row[way]["seconds"][0] < 600, row
            assert row[way]["median_s"] == row[way]["max_s"] == round(row[way]["seconds"][0], 3)
    table = (bench_dir / "bench-results" / "dashboard.md").read_text()
    assert "| view | switched to (s) | worst of 1 | opened from its address (s) | worst of 1 |" in out and table in out
    assert all(f"| {name} | " in table for name in ["first load (Runs, new browser and server)", *views])

    monkeypatch.setenv("LAMP_HOME", str(home))
    from worker.connection import embedded_running

    assert not embedded_running()  # the Redis the views started under the bench's home is stopped


def test_the_budgets_name_each_slow_view_and_a_temporary_store_is_deleted(bench_dir):
    def row(view, switched, opened):
        return {"view": view, "switched": {"median_s": switched}, "opened": {"median_s": opened}}

    report = {"settings": {"budget_s": 1.0, "load_budget_s": 2.0}, "first_load_s": 2.5,
              "views": [row("Runs", 0.4, 1.1), row("Compare (20 runs)", 1.2, 1.9), row("Run page", 0.5, 2.1)]}
    assert over_budget(report) == ["Compare (20 runs) (1.200 s)", "Run page opened from its address (2.100 s, "
                                   "budget 2 s)", "first load (2.500 s, budget 2 s)"]
    assert over_budget({**report, "first_load_s": 1.9, "views": report["views"][:1]}) == []
    with bench_home(None) as home:
        assert "lamp-bench-dashboard-" in home.name and home.is_dir()
    assert not home.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--runs", "5"], "dashboard: --runs must be at least 20, --points at least 0 and --repeat at least 1"),
    (["--home", "."], "dashboard: --home . is not empty; give a new folder"),
])
def test_dashboard_bad_input_is_one_line(bench_dir, capsys, flags, message):
    (bench_dir / "something").write_text("mine")
    assert main(["bench", "dashboard", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
