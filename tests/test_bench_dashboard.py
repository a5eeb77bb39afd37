"""`lamp bench dashboard` at a small size: the made-up runs really land in the store, every view is rendered and
timed, and the report goes to ./bench-results/ under the current directory unless --output says otherwise."""

import json
import sqlite3
from pathlib import Path

import pytest

from bench.cli import main
from bench.dashboard import WITH_TOKENS
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


@pytest.mark.timeout(300)
def test_dashboard_fills_the_store_and_times_every_view(bench_dir, monkeypatch, capsys):
    home = bench_dir / "home"
    assert main(["bench", "dashboard", "--runs", "24", "--points", "500", "--repeat", "2", "--budget-s", "600",
                 "--home", str(home)]) == 0
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
    assert report["settings"] == {"runs": 24, "points": 500, "repeat": 2, "budget_s": 600.0}
    views = ["Runs", "Launch", "Compare (5 runs)", "Compare (24 runs)", f"Dispersion ({with_tokens} runs)", "Run page"]
    assert [row["view"] for row in report["views"]] == views
    for row in report["views"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"]), row
        assert 0 < row["median_s"] <= row["max_s"] == round(max(row["seconds"]), 3)
    table = (bench_dir / "bench-results" / "dashboard.md").read_text()
    assert "| view | median render (s) | worst of 2 (s) |" in out and table in out
    assert all(f"| {name} | " in table for name in views)

    monkeypatch.setenv("LAMP_HOME", str(home))
    from worker.connection import embedded_running

    assert not embedded_running()  # the Redis the views started under the bench's home is stopped


def test_a_view_over_budget_exits_1_and_a_temporary_store_is_deleted(bench_dir, capsys):
    out = bench_dir / "elsewhere" / "dash"
    assert main(["bench", "dashboard", "--runs", "20", "--points", "0", "--repeat", "1", "--budget-s", "0",
                 "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "dashboard: over the 0 s budget: Runs (" in err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["points"] == 0 and report["runs"] == 20
    store = report["store"].removeprefix("sqlite:///")
    assert "lamp-bench-dashboard-" in store and not (bench_dir / "bench-results").exists()
    assert not Path(store).parent.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--runs", "5"], "dashboard: --runs must be at least 20, --points at least 0 and --repeat at least 1"),
    (["--home", "."], "dashboard: --home . is not empty; give a new folder"),
])
def test_dashboard_bad_input_is_one_line(bench_dir, capsys, flags, message):
    (bench_dir / "something").write_text("mine")
    assert main(["bench", "dashboard", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
