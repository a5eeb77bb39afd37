"""The paper's Figure 6 outside the browser: which PT and LAMP runs the view pairs, and `lamp figure6` writing a
real PT run's and a real LAMP run's trained tokens (tiny-t5) to PNG and SVG, from run folders and from the store."""

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from app.figure6 import newest_pair
from lamp_engine.config import RunConfig
from lamp_engine.train import train
from store.status import RunStatus

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT.parent / "shared" / "data").resolve()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(run_id: int, method: str, task: str, train_file: str | None = None, status: str = "succeeded") -> dict:
    return {"id": run_id, "method": method, "model": "minilm-l6", "task": task, "status": RunStatus(status),
            "config": {"data": {"train_file": train_file}}}


def test_the_pair_is_the_newest_pt_and_lamp_of_one_model_and_task():
    records = [  # newest first, as the store lists them
        record(6, "lamp", "custom", "ag_news.csv"), record(5, "pt", "sst2"), record(4, "lamp", "sst2"),
        record(3, "pt", "custom", "reviews.csv"), record(2, "pt", "sst2"), record(1, "lamp", "cb")]
    assert newest_pair(records) == (5, 4)  # not PT #5 on SST-2 beside LAMP #6 on an uploaded AG News file
    records.insert(0, record(7, "pt", "custom", "ag_news.csv"))
    assert newest_pair(records) == (7, 6)  # the custom task counts as one task per training file
    records.insert(0, record(8, "lamp", "sst2", status="failed"))
    assert newest_pair(records) == (7, 6)  # only finished runs
    assert newest_pair([record(2, "pt", "sst2"), record(1, "lamp", "cb")]) is None


def lamp(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lamp_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk that every PNG begins with."""
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A PT run and a LAMP run (l = 8, p = 2) on tiny-t5 / SST-2, and a LAMP run on CB, trained for real."""
    folder = tmp_path_factory.mktemp("runs")
    base = {"model": "tiny-t5", "data_dir": str(DATA), "length": 8, "steps": 2, "batch_size": 2,
            "max_eval_examples": 4}
    runs = {"pt": {"method": "pt", "task": "sst2"}, "lamp": {"method": "lamp", "task": "sst2", "pool": 2, "rank": 2},
            "lamp_cb": {"method": "lamp", "task": "cb", "pool": 2, "rank": 2}}
    for name, values in runs.items():
        train(RunConfig.from_flat({**base, **values}), folder / name)
    return {name: folder / name for name in runs}


@pytest.mark.slow
def test_lamp_figure6_writes_a_png_and_an_svg_of_the_two_runs(trained, tmp_path):
    run = lamp("figure6", "--pt", str(trained["pt"]), "--lamp", str(trained["lamp"]), "--output", "fig.png",
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("fig.png: tiny-t5 / sst2, after training: PT run pt's 8 prompt tokens (blue, "
                                  "before) and LAMP run lamp's 4 tokens of the pooled prompt P' (what the model "
                                  "reads) (red, after), one t-SNE fit over both.")
    data = (tmp_path / "fig.png").read_bytes()
    width, height = png_size(data)
    assert width >= 1040 and height >= 840 and len(data) > 20_000  # 520 x 420 plus title and legend, at 2x
    run = lamp("figure6", "--pt", str(trained["pt"]), "--lamp", str(trained["lamp"]), "--output", "fig.svg",
               "--projection", "pca", "--tokens", "unpooled", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "LAMP run lamp's 8 tokens of the unpooled C (l tokens)" in run.stdout and "one PCA fit" in run.stdout
    svg = (tmp_path / "fig.svg").read_text()
    assert svg.startswith("<svg") and "PCA 1" in svg and "before: PT" in svg and "after: LAMP" in svg
    assert svg.count('fill="#1f77b4"') >= 8 and svg.count('fill="#d62728"') >= 8  # every token, and the legend


@pytest.mark.slow
@pytest.mark.parametrize(("pair", "message"), [
    (("lamp", "lamp"), "lamp figure6: error: run lamp is a lamp run; --pt needs a pt run"),
    (("pt", "lamp_cb"), "lamp figure6: error: run pt (tiny-t5 / sst2) and run lamp_cb (tiny-t5 / cb) differ in "
                        "model or task; Figure 6 compares one model on one task"),
])
def test_lamp_figure6_refuses_a_wrong_pair_in_one_line(trained, tmp_path, pair, message):
    run = lamp("figure6", "--pt", str(trained[pair[0]]), "--lamp", str(trained[pair[1]]), "--output", "fig.png",
               cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.strip() == message and not (tmp_path / "fig.png").exists()


@pytest.mark.slow
def test_lamp_figure6_reads_runs_from_the_store_by_id(trained, tmp_path):
    from store.db import dispose, session_scope
    from store.models import Run

    home, url = tmp_path / "home", f"sqlite:///{tmp_path / 'lamp.db'}"
    env = {"LAMP_HOME": str(home), "DATABASE_URL": url}
    os.environ.update(env)  # the store opened here and the command's own see the same SQLite file
    try:
        ids = {}
        with session_scope() as session:
            for name in ("pt", "lamp"):
                method = "pt" if name == "pt" else "lamp"
                run = Run(config={"model": "tiny-t5", "task": "sst2", "method": {"method": method}}, method=method,
                          model="tiny-t5", task="sst2", status="succeeded")
                session.add(run)
                session.flush()
                shutil.copytree(trained[name], home / "runs" / str(run.id))
                run.artifact_dir = f"runs/{run.id}"
                ids[name] = run.id
        result = lamp("figure6", "--pt", str(ids["pt"]), "--lamp", str(ids["lamp"]), "--output", "store.png",
                      cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert f"PT run #{ids['pt']}'s 8 prompt tokens" in result.stdout
        assert png_size((tmp_path / "store.png").read_bytes())[0] >= 1040
        missing = lamp("figure6", "--pt", "99", "--lamp", str(ids["lamp"]), cwd=tmp_path, env=env)
        assert missing.returncode == 2 and missing.stderr.strip() == "lamp figure6: error: run #99 is not in the store"
    finally:
        dispose(url)
        for key in env:
            os.environ.pop(key)
