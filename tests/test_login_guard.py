"""The login under attack: guesses counted across sessions by name and address and locked, identity-provider logins
outside the allow-list refused, log-out forgetting the session, other people's text shown as text, and the
warning a dashboard logs when it serves the network without TLS."""

from __future__ import annotations

import html
import logging
import re
import time
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from app import access, launcher
from app.access import AllowList, LoginLocked, LoginRefused, authenticate, client_address, identity_actor
from app.backend import ADMIN_KEY, USER_KEY
from lamp_common.passwords import hash_password
from store.accounts import add_account
from store.db import dispose, session_scope
from store.models import Run

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
PASSWORD = "correct horse battery"
OIDC = {"redirect_uri": "http://lamp.example:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "lamp", "client_secret": "s", "server_metadata_url": "https://idp.example/.well-known/openid"}
FAILED = "login failed: "


@pytest.fixture
def dashboard_on(tmp_path, monkeypatch, redis_url):
    """The app as if bound to an address (set by the test), on a fresh SQLite store with no login configured, and
    the session's Redis (without REDIS_URL the app would start an embedded one that outlives the test)."""
    url = f"sqlite:///{tmp_path / 'lamp.db'}"
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", url)
    for name in (access.HASH_ENV, access.ALLOWED_EMAILS_ENV, access.ALLOWED_DOMAINS_ENV, access.BEHIND_TLS_ENV):
        monkeypatch.delenv(name, raising=False)
    yield lambda address: st_config.set_option("server.address", address)
    st_config.set_option("server.address", None)
    dispose(url)


def app_test() -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=30)


def failures_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "app.access" and r.getMessage().startswith(FAILED)]


def try_password(at: AppTest, name: str, password: str) -> str:
    """Submit the login form; returns what the page says (the message, or the first title once logged in)."""
    at.text_input(key="login.name").input(name)
    at.text_input(key="login.password").input(password)
    at.button[0].click().run()
    return shown(at.error[0].value) if at.error else at.title[0].value


@pytest.mark.slow
def test_fifty_wrong_passwords_from_ten_sessions_lock_the_name_and_log_fifty_lines(dashboard_on, caplog,
                                                                                  redis_url):
    dashboard_on("0.0.0.0")
    add_account("ada", hash_password(PASSWORD), admin=False)
    caplog.set_level(logging.WARNING, logger="app.access")
    sessions = [app_test().run() for _ in range(10)]
    guesses = [f"guess-{n:02d}-tulip" for n in range(50)]
    said = [try_password(sessions[n % 10], "ada", guess) for n, guess in enumerate(guesses)]
    wrong, locked = "Wrong name or password.", "Too many failed logins for this name or from this address"
    assert said[:5] == [wrong] * 5
    assert all(message.startswith(locked) for message in said[5:]), said[5:]
    assert try_password(sessions[3], "ada", PASSWORD).startswith(locked)  # right, but during the lock
    assert USER_KEY not in sessions[3].session_state
    lines = failures_logged(caplog)
    assert len(lines) == 51  # the 50 guesses and the right password refused during the lock
    assert lines[:5] == ["login failed: name 'ada' from 127.0.0.1: wrong name or password"] * 5
    assert set(lines[5:]) == {"login failed: name 'ada' from 127.0.0.1: locked after too many failures"}
    assert not any(secret in caplog.text for secret in [*guesses, PASSWORD])
    assert not any(secret in str(dict(at.session_state)) for at in sessions for secret in [*guesses, PASSWORD])


def test_a_lock_lasts_the_window_and_a_right_password_forgives_the_name(lamp_home, monkeypatch):
    monkeypatch.setenv("LAMP_LOGIN_LOCK_MINUTES", "0.05")  # 3 s
    add_account("ada", hash_password(PASSWORD), admin=True)
    for _ in range(4):
        with pytest.raises(LoginRefused, match="^Wrong name or password.$"):
            authenticate("ada", "nope-nope", "10.0.0.1")
    assert authenticate("ada", PASSWORD, "10.0.0.1").admin  # the fifth try is right: the four are forgiven
    for _ in range(5):
        with pytest.raises(LoginRefused):
            authenticate("ada", "nope-nope", "10.0.0.1")
    with pytest.raises(LoginLocked, match="try again in 0.05 minutes"):
        authenticate("ada", PASSWORD, "10.0.0.2")  # the name is locked, from any address
    time.sleep(3.2)
    assert authenticate("ada", PASSWORD, "10.0.0.2").name == "ada"


def test_failures_from_one_address_lock_it_for_every_name(database_url, monkeypatch):
    monkeypatch.setenv("LAMP_LOGIN_FAILURES_PER_ADDRESS", "3")
    add_account("bob", hash_password(PASSWORD), admin=False)
    for name in ("ada", "carl", "dora"):  # names without an account fail like wrong passwords
        with pytest.raises(LoginRefused, match="^Wrong name or password.$"):
            authenticate(name, "guess-guess", "203.0.113.9")
    with pytest.raises(LoginLocked):
        authenticate("bob", PASSWORD, "203.0.113.9")
    assert authenticate("bob", PASSWORD, "198.51.100.7").name == "bob"


def test_the_one_person_password_hash_logs_in_as_admin(lamp_home, monkeypatch):
    monkeypatch.setenv(access.HASH_ENV, str(hash_password(PASSWORD)))
    assert authenticate("admin", PASSWORD, "10.0.0.1") == access.Actor("admin", admin=True)
    with pytest.raises(LoginRefused):
        authenticate("ada", PASSWORD, "10.0.0.1")  # the shared password no longer lets anyone pick a name


def test_an_exposed_dashboard_with_an_identity_provider_and_no_allow_list_refuses_to_start(tmp_path, monkeypatch,
                                                                                           capsys):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text(
        "[auth]\n" + "".join(f'{key} = "{value}"\n' for key, value in OIDC.items()))
    for name in (access.ALLOWED_EMAILS_ENV, access.ALLOWED_DOMAINS_ENV, access.HASH_ENV):
        monkeypatch.delenv(name, raising=False)
    assert launcher.main(["up", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        "lamp up: --host 0.0.0.0: OpenID Connect ([auth] in secrets.toml) would let in anyone its identity provider "
        "knows; set LAMP_ALLOWED_EMAILS or LAMP_ALLOWED_DOMAINS (comma-separated), or allowed_emails / "
        "allowed_domains in a [lamp] section of secrets.toml\n")
    assert not (tmp_path / "home" / "redis").exists()


def identity_login(email: str, verified: bool = True) -> AppTest:
    at = app_test()
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": True, "email": email, "email_verified": verified}
    return at.run()


def test_an_identity_provider_login_outside_the_allow_list_is_refused(dashboard_on, monkeypatch, caplog):
    dashboard_on("0.0.0.0")
    monkeypatch.setenv(access.ALLOWED_DOMAINS_ENV, "lab.example")
    monkeypatch.setenv(access.ALLOWED_EMAILS_ENV, "guest@elsewhere.example")
    caplog.set_level(logging.WARNING, logger="app.access")
    add_account("root@lab.example", None, admin=True)

    outsider = identity_login("eve@evil.example")
    assert [shown(e.value) for e in outsider.error] == [
        "eve@evil.example may not use this dashboard; its operator can allow it in LAMP_ALLOWED_EMAILS or "
        "LAMP_ALLOWED_DOMAINS."]
    assert "Runs" not in [t.value for t in outsider.title] and USER_KEY not in outsider.session_state
    assert failures_logged(caplog) == [
        "login failed: identity 'eve@evil.example' from 127.0.0.1: not in the allowed e-mails or domains"]
    unverified = identity_login("ada@lab.example", verified=False)
    assert unverified.error and "Runs" not in [t.value for t in unverified.title]

    member = identity_login("ada@lab.example")
    assert [t.value for t in member.title] == ["Runs"] and not member.error
    assert (member.session_state[USER_KEY], member.session_state[ADMIN_KEY]) == ("ada@lab.example", False)
    guest, admin = identity_login("Guest@Elsewhere.example"), identity_login("Root@Lab.example")
    assert [t.value for t in guest.title] == ["Runs"] and guest.session_state[USER_KEY] == "guest@elsewhere.example"
    assert (admin.session_state[USER_KEY], admin.session_state[ADMIN_KEY]) == ("root@lab.example", True)


def test_logging_out_forgets_the_whole_session(dashboard_on):
    dashboard_on("0.0.0.0")
    add_account("ada", hash_password(PASSWORD), admin=False)
    at = app_test().run()
    assert try_password(at, "ada", PASSWORD) == "Runs"
    at.switch_page("views/launch.py").run()
    at.number_input(key="launch.steps").set_value(7).run()
    assert at.session_state["launch.steps"] == 7
    at.button(key="login.logout").click().run()
    assert USER_KEY not in at.session_state and ADMIN_KEY not in at.session_state
    assert "launch.steps" not in at.session_state  # the next person at this browser starts from nothing
    assert [t.value for t in at.title] == ["LAMP Studio"] and at.text_input(key="login.password")


def test_a_live_section_draws_nothing_once_its_session_has_logged_out():
    def page() -> None:
        import streamlit as st

        from app.ui import live

        live(lambda: st.text("run #7: accuracy 0.91"), every=None)()

    at = AppTest.from_function(page).run()
    assert not at.text  # no one is logged in: a fragment re-run after log-out shows nothing
    at.session_state[USER_KEY] = "ada"
    assert [t.value for t in at.run().text] == ["run #7: accuracy 0.91"]


HOSTILE = {"model": "[click me](https://evil.example/x) *big*", "submitted_by": "**eve**",
           "error": "# Urgent <b>!</b> ![img](https://evil.example/i.png) `run this`"}


def rendered(at: AppTest) -> list[str]:
    """Every Markdown body of the page, rendered as the browser's Markdown renderer would (CommonMark)."""
    bodies = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success") for e in at.get(kind)]
    return [MarkdownIt("commonmark").render(body) for body in bodies]


def text_of(page: list[str]) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(page)))


def shown(markdown: str) -> str:
    """What a reader sees of one Markdown body."""
    return text_of([MarkdownIt("commonmark").render(markdown)]).strip()


@pytest.mark.parametrize("view", ["run", "runs"])
def test_other_peoples_text_is_shown_as_text_not_markdown(dashboard_on, view):
    dashboard_on("127.0.0.1")
    with session_scope() as session:
        run = Run(config={"model": HOSTILE["model"], "task": "sst2"}, method="pt", task="sst2", status="failed",
                  progress=0.0, step=0, **HOSTILE)
        session.add(run)
        session.flush()
        run_id = run.id
    at = app_test()
    at.query_params["id"] = str(run_id)
    at.run()
    at.switch_page(f"views/{view}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    page = "\n".join(rendered(at))
    for markup in ('href="https://evil', 'src="https://evil', "<em>big</em>", "<strong>eve</strong>",
                   "<code>run this</code>", "<h1>", "<b>"):
        assert markup not in page
    text = text_of([page])
    assert HOSTILE["error"] in text and HOSTILE["model"] in text
    if view == "run":
        assert "submitted by: **eve**" in text


def test_a_dashboard_on_the_network_without_tls_logs_a_warning(lamp_home, monkeypatch, capsys):
    monkeypatch.setenv(access.HASH_ENV, str(hash_password(PASSWORD)))
    monkeypatch.delenv(access.BEHIND_TLS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(lamp_home))
    launcher.check_access("127.0.0.1")
    assert capsys.readouterr().err == ""
    launcher.check_access("0.0.0.0")
    assert capsys.readouterr().err == (
        "lamp up: warning: the dashboard serves 0.0.0.0 over plain HTTP, so passwords and session cookies cross the "
        "network readable; put the TLS proxy in front (`docker compose --profile tls up -d`, see README) and set "
        "LAMP_BEHIND_TLS=1\n")
    monkeypatch.setenv(access.BEHIND_TLS_ENV, "1")
    launcher.check_access("0.0.0.0")
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(access.BEHIND_TLS_ENV, "maybe")
    with pytest.raises(access.LampError, match="^LAMP_BEHIND_TLS: 'maybe' is not yes or no"):
        launcher.check_access("0.0.0.0")


def test_the_client_address_comes_from_the_proxy_only_behind_tls(monkeypatch):
    monkeypatch.delenv(access.BEHIND_TLS_ENV, raising=False)
    assert client_address("198.51.100.7", "203.0.113.9") == "198.51.100.7"  # anyone can send the header
    assert client_address(None, None) == "127.0.0.1"  # Streamlit's None for a loopback client
    monkeypatch.setenv(access.BEHIND_TLS_ENV, "1")
    assert client_address("172.18.0.5", "6.6.6.6, 203.0.113.9") == "203.0.113.9"  # the entry the proxy wrote
    assert client_address("172.18.0.5", "203.0.113.9\nforged log line") == "unknown"
    assert client_address("172.18.0.5", None) == "172.18.0.5"


def test_an_identity_must_be_verified_and_allowed(lamp_home):
    lab = AllowList(domains=frozenset({"lab.example"}))
    ada = identity_actor({"email": "ada@lab.example", "email_verified": True}, lab, "10.0.0.1")
    assert ada == access.Actor("ada@lab.example", admin=False)
    for user in ({"email": "ada@lab.example", "email_verified": False}, {"name": "ada"},
                 {"email": "ada@lab.example.evil"}):
        with pytest.raises(LoginRefused):
            identity_actor(user, lab, "10.0.0.1")
