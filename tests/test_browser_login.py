"""The login in a real browser: `lamp up --host 0.0.0.0` with a password hash, Debian's Chromium through Playwright.

The page shows a login and nothing of the dashboard, a wrong password is refused, the right one shows Runs, and
the password appears neither in the page nor in anything the dashboard logged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.access import hash_password

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
PASSWORD = "tr0mbone-sunrise-42"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`"),
    pytest.mark.slow,
    pytest.mark.timeout(180),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path, redis_url):
    """`lamp up` bound to every interface, with a password hash and no worker; its whole output in a file."""
    port = free_port()
    env = {**os.environ, "LAMP_HOME": str(tmp_path / "home"), "DATABASE_URL": f"sqlite:///{tmp_path / 'lamp.db'}",
           "REDIS_URL": redis_url, "LAMP_PASSWORD_HASH": str(hash_password(PASSWORD)), "HOME": str(tmp_path)}
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        up = subprocess.Popen([sys.executable, "-m", "lamp_cli", "up", "--host", "0.0.0.0", "--port", str(port),
                               "--no-worker"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "LAMP Studio is up" not in log.read_text() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "LAMP Studio is up" in log.read_text(), log.read_text()
        yield f"http://127.0.0.1:{port}", log
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)


def settle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_selector(IDLE, timeout=60_000)


def log_in(page, name: str, password: str) -> None:
    page.get_by_label("your name (recorded with the runs you launch)").fill(name)
    page.get_by_label("password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    settle(page)


def test_a_network_dashboard_asks_for_the_password_and_never_shows_it(dashboard):
    from playwright.sync_api import expect, sync_playwright

    url, log = dashboard
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        settle(page)
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert not page.get_by_role("heading", name="Runs").count()
        # no navigation before the login (exact: the name field's label says "the runs you launch")
        assert not page.locator("[data-testid='stSidebarNav']").count()
        assert not page.get_by_text("Launch", exact=True).count()

        log_in(page, "ada", "not-the-password")
        expect(page.get_by_text("Wrong name or password.")).to_be_visible()
        assert not page.get_by_role("heading", name="Runs").count()

        log_in(page, "ada", PASSWORD)
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("logged in as ada")).to_be_visible()
        expect(page.locator("[data-testid='stSidebarNav']").get_by_text("Launch", exact=True)).to_be_visible()
        assert PASSWORD not in page.content()
        browser.close()
    assert PASSWORD not in log.read_text()
