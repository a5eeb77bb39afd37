"""The dashboard in a real browser: Debian's Chromium through Playwright (the dev extra), on `streamlit run` bound to
a free loopback port. The browser tests (tests/browser.py) and `lamp bench dashboard` share these, so a timing
is taken the way the tests drive the pages (DESIGN.md section 6; Streamlit's e2e_playwright conftest does the same).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from app.launcher import draw_first_page, streamlit_command, wait_healthy

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def launch_browser(playwright: Any) -> Any:
    """Headless Chromium without the background connections this closed network refuses."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])


def settle(page: Any) -> None:
    """Wait until Streamlit has finished running the script for the last interaction."""
    page.wait_for_timeout(300)
    page.wait_for_selector(IDLE, timeout=60_000)


def wait_ready(url: str, server: subprocess.Popen) -> None:
    """Healthy and its first page drawn once, as `lamp up` has it before it prints the address."""
    assert wait_healthy(url, server), f"no health answer from {url} (streamlit's exit code: {server.poll()})"
    not_drawn = draw_first_page(url)
    assert not_drawn is None, f"the first page of {url} was not drawn: {not_drawn}"


@contextlib.contextmanager
def streamlit_app(env: dict[str, str], log: IO[Any]) -> Iterator[str]:
    """The dashboard on a free loopback port, started as `lamp up` starts it, healthy and its first page drawn; its
    URL. Stopped when the block ends."""
    port = free_port()
    server = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
