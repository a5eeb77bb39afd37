"""`lamp up`: everything a newcomer needs on one machine, stopped together by Ctrl-C.

Checks the port, the login a non-loopback address needs, the store and Redis first (each failure is one line
and exit code 2), upgrades the store, starts one worker (`lamp worker`) and the dashboard (`streamlit run
app/main.py`, bound to 127.0.0.1 unless told otherwise), draws the dashboard's first page once, prints the
address and waits. On Ctrl-C or SIGTERM it stops both children and the embedded Redis it owns (started, or
adopted from a `lamp up` that was killed); a second Ctrl-C kills what is still running instead of interrupting the
clean-up. The children die with it even when it is killed itself (SIGKILL), so nothing is left behind but the
embedded Redis, which the next `lamp up` adopts.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO

from app.access import AllowList, login_for, password_hash, plain_http_warning, secrets_files, section_in_files
from lamp_common.cli import OneLineParser
from lamp_common.errors import LampError
from store.accounts import any_account
from store.settings import max_upload_mb

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
HEALTH_TIMEOUT_S = 60.0
FIRST_PAGE_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lamp up", description="start the store, Redis, one worker and the dashboard")
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


def check_access(host: str) -> None:
    """A dashboard reachable from the network needs a login: refuse to start one that has none (or whose identity
    provider has no allow-list), and warn in the log when it would serve the network without TLS."""
    password_hash()  # a malformed hash is refused here, not when the first visitor logs in
    files = secrets_files()
    login_for(host, section_in_files(files), AllowList.configured(section_in_files(files, "lamp")), any_account)
    warning = plain_http_warning(host)
    if warning:
        print(f"lamp up: {warning}", file=sys.stderr, flush=True)


def prepare_services() -> tuple[str, IO[str] | None]:
    """Upgrade the store and reach Redis (starting the embedded one if REDIS_URL is unset). Returns the Redis URL
    the children must use and, when this process owns the embedded server, its owner lock (held until exit)."""
    from store.db import ensure_schema
    from worker.connection import own_embedded_redis, redis_connection, redis_url

    ensure_schema()
    owner = None if os.environ.get("REDIS_URL") else own_embedded_redis()
    url = redis_url()
    redis_connection(url)
    return url, owner


def _die_with_launcher() -> None:
    """Run in each child before it starts: SIGTERM when `lamp up` dies, even by SIGKILL (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_children(host: str, port: int, redis_url: str, with_worker: bool) -> list[subprocess.Popen]:
    env = {**os.environ, "REDIS_URL": redis_url}
    children = []
    if with_worker:
        children.append(subprocess.Popen([sys.executable, "-m", "lamp_cli", "worker"], cwd=ROOT, env=env,
                                         preexec_fn=_die_with_launcher))
    children.append(subprocess.Popen(streamlit_command(host, port), cwd=ROOT, env=env, preexec_fn=_die_with_launcher))
    return children


def streamlit_command(host: str, port: int) -> list[str]:
    """The dashboard's Streamlit (app/serve.py: the views' libraries imported before the first page): uploads
    refused above LAMP_MAX_UPLOAD_MB before they are read, the developer toolbar (Deploy, rerun, settings) hidden
    from users, who see only what the pages offer them, and no full garbage collection after every page run (it
    held each page's last message back by 0.1-0.15 s with the engine's modules loaded; Python's own collector
    still runs)."""
    return [sys.executable, "-m", "app.serve", "run", str(APP), "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
            "--server.maxUploadSize", str(max_upload_mb()), "--runner.postScriptGC", "false"]


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


def draw_first_page(url: str, timeout_s: float = FIRST_PAGE_TIMEOUT_S) -> str | None:
    """Run the dashboard's first page once, in a session of our own, before anyone visits: the server's first
    session costs about 0.4 s that the first visitor would otherwise wait for (docs/benchmarks.md 7). None when the
    page ran to its end, else why not (the dashboard still serves; only its first visitor waits longer)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    request = BackMsg()
    request.rerun_script.query_string = ""  # the address's root: the Runs view, or the login form where one is asked
    deadline = time.monotonic() + timeout_s
    try:
        with connect(url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                     open_timeout=timeout_s, max_size=None) as session:
            session.send(request.SerializeToString())
            while True:
                message = ForwardMsg.FromString(session.recv(timeout=max(deadline - time.monotonic(), 0.0)))
                if message.WhichOneof("type") == "script_finished":
                    return None
    except (OSError, TimeoutError, WebSocketException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def stop_children(children: list[subprocess.Popen], hurry: Callable[[], bool] = lambda: False) -> None:
    """SIGTERM first (the worker finishes its current step and saves); SIGKILL what is still there after
    STOP_TIMEOUT_S, or at once when `hurry()` says so."""
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(child.poll() is None for child in children) and time.monotonic() < deadline and not hurry():
        time.sleep(0.1)
    for child in children:
        if child.poll() is None:
            child.kill()
            child.wait()


def stop_requested_again() -> bool:
    """Whether Ctrl-C or SIGTERM came again while the stop signals are held."""
    return bool(signal.sigpending() & STOP_SIGNALS)


def shut_down(children: list[subprocess.Popen], owner: IO[str] | None) -> None:
    """Stop the children, then the embedded Redis this process owns. The stop signals are held meanwhile, so a
    second Ctrl-C cannot cut the clean-up short: it kills the children at once instead of waiting for them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    stop_children(children, hurry=stop_requested_again)
    if owner is not None:
        from worker.connection import stop_embedded_redis

        stop_embedded_redis()
        owner.close()


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
        check_access(args.host)
        redis_url, owner = prepare_services()
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
        not_drawn = draw_first_page(address)
        if not_drawn:
            print(f"lamp up: the first page could not be drawn ahead of the first visitor ({not_drawn}); the "
                  "dashboard serves, its first page will take longer", file=sys.stderr, flush=True)
        print(f"LAMP Studio is up: {address}  (Ctrl-C stops the dashboard, the worker and the embedded Redis)",
              flush=True)
        return supervise(children)
    except KeyboardInterrupt:
        print("lamp up: stopping (Ctrl-C again to stop at once)", flush=True)
        return 0
    finally:
        shut_down(children, owner)
