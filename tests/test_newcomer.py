"""A newcomer's first ten minutes, for real: clone, `make run`, submit a run, see it succeed, Ctrl-C.

The clone gets its own .venv from `make run` (pip's cache makes that a few minutes), the embedded Redis and
SQLite under a fresh LAMP_HOME, and the task files of ../shared/data beside it, exactly as the README says.
"""

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from private_servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
INSTALL_AND_START_S = 900
RUN_S = 240


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(condition, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s; make run printed:\n{log.read_text()[-3000:]}")
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.timeout(INSTALL_AND_START_S + RUN_S + 120)
@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="needs ../shared/data beside the checkout")
def test_clone_make_run_submit_and_stop(tmp_path):
    (tmp_path / "shared").symlink_to(SHARED)
    clone = tmp_path / "lamp-studio"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "LAMP_DATA_DIR",
                                                             "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")}
    env |= {"LAMP_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    port, log = free_port(), tmp_path / "make-run.log"
    with log.open("w") as out:
        make = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    lamp = str(clone / ".venv" / "bin" / "lamp")
    try:
        wait_for(lambda: healthy(port), INSTALL_AND_START_S, "the dashboard answering /_stcore/health", log)
        assert f"http://127.0.0.1:{port}" in log.read_text()
        submit = subprocess.run([lamp, "submit", "--model", "tiny-t5", "--task", "sst2", "--steps", "2",
                                 "--batch-size", "2", "--length", "4", "--rank", "2", "--max-eval-examples", "4"],
                                cwd=clone, env=env, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stderr
        run_id = submit.stdout.strip()

        def status() -> dict:
            shown = subprocess.run([lamp, "status", run_id, "--json"], cwd=clone, env=env, capture_output=True,
                                   text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            return json.loads(shown.stdout)

        wait_for(lambda: status()["status"] in ("succeeded", "failed"), RUN_S, f"run {run_id} finishing", log)
        final = status()
        assert final["status"] == "succeeded", final.get("error")
        assert final["trainable_params"] == 4 * 2 + 2 + 2 * 64 and "accuracy" in final["metrics"]
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C in the terminal that ran `make run`
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            pytest.fail(f"make run did not stop on Ctrl-C:\n{log.read_text()[-3000:]}")
    assert not healthy(port)
    leftovers = subprocess.run(["pgrep", "-f", str(clone)], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes of the clone still running: {leftovers}"
