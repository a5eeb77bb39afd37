"""`lamp up`: everything a newcomer needs on one machine, stopped together by Ctrl-C.

Checks the port, the store and Redis first (each failure is one line and exit code 2), upgrades the store,
starts one worker (`lamp worker`) and the dashboard (`streamlit run app/main.py`, bound to 127.0.0.1 unless told
otherwise), prints the address and waits. On Ctrl-C or SIGTERM it stops both children, and the embedded Redis if
this command started it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import NoReturn

from lamp_engine.errors import LampError

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
HEALTH_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lamp up: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lamp up", description="start the store, Redis, one worker and the dashboard")
    parser.add_argument("--host", default="127.0.0.1", help="address the dashboard binds to (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    parser.add_argument("--no-worker", action="store_true", help="start the dashboard without a worker")
    return parser


def check_port(host: str, port: int) -> None:
    """Fail early with a clear line rather than let Streamlit pick another port silently."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise LampError(f"port: {host}:{port} is not free ({exc.strerror}); stop what uses it or pass "
                            "--port N") from None


def prepare_services() -> tuple[str, bool]:
    """Upgrade the store and reach Redis (starting the embedded one if REDIS_URL is unset).
    Returns the Redis URL the children must use and whether this call started the embedded server."""
    from store.db import ensure_schema
    from worker.connection import embedded_running, redis_connection, redis_url

    ensure_schema()
    started_redis = not os.environ.get("REDIS_URL") and not embedded_running()
    url = redis_url()
    redis_connection(url)
    return url, started_redis


def start_children(host: str, port: int, redis_url: str, with_worker: bool) -> list[subprocess.Popen]:
    env = {**os.environ, "REDIS_URL": redis_url}
    children = []
    if with_worker:
        children.append(subprocess.Popen([sys.executable, "-m", "lamp_cli", "worker"], cwd=ROOT, env=env))
    children.append(subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", host, "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env))
    return children


def wait_healthy(url: str, dashboard: subprocess.Popen) -> bool:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline and dashboard.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.3)
    return False


def stop_children(children: list[subprocess.Popen]) -> None:
    """SIGTERM first (the worker finishes its current step and saves), SIGKILL what is still there later."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM takes the same way out as Ctrl-C."""
    raise KeyboardInterrupt


def supervise(children: list[subprocess.Popen]) -> int:
    """Wait until a child dies on its own (exit 1); Ctrl-C or SIGTERM ends the wait with KeyboardInterrupt."""
    while True:
        dead = [c for c in children if c.poll() is not None]
        if dead:
            print(f"lamp up: {' '.join(map(str, dead[0].args[1:4]))} exited with code {dead[0].returncode}; "
                  "stopping the rest", file=sys.stderr)
            return 1
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    try:
        check_port(args.host, args.port)
        redis_url, started_redis = prepare_services()
    except LampError as exc:
        print(f"lamp up: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    children = start_children(args.host, args.port, redis_url, with_worker=not args.no_worker)
    address = f"http://{args.host}:{args.port}"
    try:
        if not wait_healthy(address, children[-1]):
            print(f"lamp up: the dashboard did not answer at {address} within {HEALTH_TIMEOUT_S:.0f} s",
                  file=sys.stderr)
            return 1
        print(f"LAMP Studio is up: {address}  (Ctrl-C stops the dashboard, the worker and the embedded Redis)",
              flush=True)
        return supervise(children)
    except KeyboardInterrupt:
        print("lamp up: stopping", flush=True)
        return 0
    finally:
        stop_children(children)
        if started_redis:
            from worker.connection import stop_embedded_redis

            stop_embedded_redis()
