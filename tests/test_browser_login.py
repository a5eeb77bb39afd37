"""The login in a real browser: `lamp up --host 0.0.0.0` with accounts and the one-person password hash, Debian's
Chromium through Playwright.

The page shows a login and nothing of the dashboard, a wrong password is refused, the right one shows Runs, and
the password appears neither in the page nor in anything the dashboard logged. Two accounts: Bob cannot cancel
Alice's run, an admin can, and the run's page then says who cancelled it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, ROOT, launch_browser, settle
from private_servers import free_port

from app.access import hash_password
from lamp_engine.config import RunConfig
from store.accounts import add_account
from store.audit import actions_on
from store.db import dispose, session_scope
from store.queries import get_run
from worker import queue

PASSWORD = "tr0mbone-sunrise-42"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: `apt-get install chromium`"),
    pytest.mark.slow,
    pytest.mark.timeout(180),
]


@pytest.fixture
def dashboard(tmp_path, redis_url, monkeypatch):
    """`lamp up` bound to every interface, with the one-person password hash (`admin`), the accounts alice and bob
    and no worker; its whole output in a file."""
    port = free_port("0.0.0.0")
    env = {**os.environ, "LAMP_HOME": str(tmp_path / "home"), "DATABASE_URL": f"sqlite:///{tmp_path / 'lamp.db'}",
           "REDIS_URL": redis_url, "LAMP_PASSWORD_HASH": str(hash_password(PASSWORD)), "HOME": str(tmp_path)}
    for key in ("LAMP_HOME", "DATABASE_URL"):
        monkeypatch.setenv(key, env[key])
    for name in ("alice", "bob"):
        add_account(name, hash_password(f"{name}-{PASSWORD}"), admin=False)
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
        dispose(env["DATABASE_URL"])


def log_in(page, name: str, password: str) -> None:
    page.get_by_label("name", exact=True).fill(name)
    page.get_by_label("password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
    settle(page)


def test_a_network_dashboard_asks_for_the_password_and_never_shows_it(dashboard):
    from playwright.sync_api import expect, sync_playwright

    url, log = dashboard
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url)
        settle(page)
        expect(page.get_by_role("button", name="Log in")).to_be_visible()
        assert not page.get_by_role("heading", name="Runs").count()
        assert not page.locator("[data-testid='stSidebarNav']").count()  # no navigation before the login
        assert not page.get_by_text("Launch", exact=True).count()

        log_in(page, "admin", "not-the-password")
        expect(page.get_by_text("Wrong name or password.")).to_be_visible()
        assert not page.get_by_role("heading", name="Runs").count()

        log_in(page, "admin", PASSWORD)
        expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("logged in as admin (admin)")).to_be_visible()
        expect(page.locator("[data-testid='stSidebarNav']").get_by_text("Launch", exact=True)).to_be_visible()
        assert PASSWORD not in page.content()
        browser.close()
    assert PASSWORD not in log.read_text()


def open_run_page(page) -> None:
    """The Run page, through the sidebar (a new address would start a new session, logged out): it opens on the
    newest run."""
    page.locator("[data-testid='stSidebarNav']").get_by_text("Run", exact=True).click()
    settle(page)


def test_bob_cannot_cancel_alices_run_an_admin_can_and_the_page_says_who_did(dashboard):
    from playwright.sync_api import expect, sync_playwright

    url, _ = dashboard
    config = RunConfig.from_flat({"model": "tiny-t5", "task": "sst2", "steps": 2, "length": 4, "rank": 2})
    run_id = queue.submit_run(config, submitted_by="alice")  # no worker: it stays queued
    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        bob = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        bob.goto(url)
        settle(bob)
        log_in(bob, "bob", f"bob-{PASSWORD}")
        open_run_page(bob)
        expect(bob.get_by_text("Only its owner (alice) or an admin can stop, cancel, retry or delete this run.")
               ).to_be_visible(timeout=30_000)
        assert not bob.get_by_role("button", name="Cancel").count()

        admin = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        admin.goto(url)
        settle(admin)
        log_in(admin, "admin", PASSWORD)
        open_run_page(admin)
        admin.get_by_role("button", name="Cancel").click()
        settle(admin)
        expect(admin.get_by_text("cancelled by admin at ")).to_be_visible(timeout=30_000)

        # Bob's page redraws the run by itself while it was active: anyone sees who cancelled it
        expect(bob.get_by_text("cancelled by admin at ")).to_be_visible(timeout=30_000)
        browser.close()
    with session_scope() as session:
        assert get_run(session, run_id).status == "cancelled"
        assert [(action.action, action.actor) for action in actions_on(session, run_id)] == [("cancel", "admin")]
