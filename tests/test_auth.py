"""Who may use the dashboard: open on loopback, a login on any other address (OpenID Connect through st.login for
allowed e-mails, accounts of the store, or the one-person password hash), and a refusal with none; `lamp passwd`,
and who submitted each run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from test_login_guard import shown

from app import access, launcher
from app.access import AccessError, AllowList, Login, PasswordHash, hash_password, login_for
from lamp_common.passwords import PasswordError
from store.accounts import add_account
from store.db import dispose, session_scope
from store.models import Run

ROOT = Path(__file__).resolve().parents[1]
MAIN = str(ROOT / "app" / "main.py")
PASSWORD = "correct horse battery"
OIDC = {"redirect_uri": "http://lamp.example:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "lamp", "client_secret": "s", "server_metadata_url": "https://idp.example/.well-known/openid"}


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
    ("192.168.1.5", False), ("", False), (None, False), ("lamp.example", False)])
def test_only_a_loopback_address_is_open(address, loopback):
    assert access.bound_to_loopback(address) is loopback


LAB = AllowList(domains=frozenset({"lab.example"}))
NOBODY, SOMEONE = (lambda: False), (lambda: True)  # whether the store has accounts


def test_the_login_follows_the_address_and_what_is_configured(monkeypatch):
    monkeypatch.delenv(access.HASH_ENV, raising=False)
    assert login_for("127.0.0.1", {}, AllowList(), NOBODY) is Login.NONE
    with pytest.raises(AccessError, match=r"^--host 0\.0\.0\.0: the dashboard would serve 0\.0\.0\.0 without a login; "
                                          r"add accounts with `lamp user add NAME \[--admin\]`, set LAMP_PASSWORD"):
        login_for("0.0.0.0", {}, AllowList(), NOBODY)
    assert login_for("0.0.0.0", {}, AllowList(), SOMEONE) is Login.PASSWORD  # accounts in the store
    assert login_for("0.0.0.0", OIDC, LAB, NOBODY) is Login.OIDC
    assert login_for("0.0.0.0", {**{k: OIDC[k] for k in ("redirect_uri", "cookie_secret")},
                                 "google": {k: OIDC[k] for k in access.OIDC_KEYS}}, LAB, NOBODY) is Login.OIDC
    with pytest.raises(AccessError):
        login_for("0.0.0.0", {"redirect_uri": OIDC["redirect_uri"]}, LAB, NOBODY)  # incomplete: not a login
    monkeypatch.setenv(access.HASH_ENV, str(hash_password(PASSWORD)))
    assert login_for("0.0.0.0", {}, AllowList(), NOBODY) is Login.PASSWORD
    assert login_for("0.0.0.0", OIDC, LAB, SOMEONE) is Login.OIDC  # an identity provider wins over passwords


def test_an_identity_provider_without_an_allow_list_is_refused_on_the_network_only(monkeypatch):
    monkeypatch.delenv(access.ALLOWED_EMAILS_ENV, raising=False)
    monkeypatch.delenv(access.ALLOWED_DOMAINS_ENV, raising=False)
    with pytest.raises(AccessError, match=r"^--host 0\.0\.0\.0: OpenID Connect \(\[auth\] in secrets\.toml\) would let "
                                          r"in anyone its identity provider knows; set LAMP_ALLOWED_EMAILS or "):
        login_for("0.0.0.0", OIDC, AllowList.configured({}), SOMEONE)
    assert login_for("127.0.0.1", OIDC, AllowList.configured({}), NOBODY) is Login.NONE
    monkeypatch.setenv(access.ALLOWED_EMAILS_ENV, " Ada@Lab.example , bob@elsewhere.example")
    allowed = AllowList.configured({"allowed_domains": ["@uni.example"]})
    assert allowed == AllowList(frozenset({"ada@lab.example", "bob@elsewhere.example"}), frozenset({"uni.example"}))
    assert [allowed.allows(email) for email in ("ADA@lab.example", "carl@lab.example", "dora@uni.example",
                                                "eve@uni.example.evil", "uni.example", "")] == [
        True, False, True, False, False, False]


def test_a_password_hash_verifies_only_its_password_and_a_bad_one_is_one_line():
    encoded = str(hash_password(PASSWORD))
    assert encoded.startswith("scrypt:16384:8:1:") and PASSWORD not in encoded and "$" not in encoded
    parsed = PasswordHash.parse(encoded)
    assert parsed.matches(PASSWORD) and not parsed.matches(PASSWORD + " ") and not parsed.matches("")
    assert str(hash_password(PASSWORD)) != encoded  # salted
    with pytest.raises(PasswordError, match="^LAMP_PASSWORD_HASH: not a hash made by `lamp passwd`"):
        PasswordHash.parse("plaintext-password")


def test_lamp_passwd_prints_a_hash_line_and_never_the_password():
    done = subprocess.run([sys.executable, "-m", "lamp_cli", "passwd"], input=PASSWORD + "\n", cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    key, _, value = done.stdout.strip().partition("=")
    assert key == "LAMP_PASSWORD_HASH" and PasswordHash.parse(value).matches(PASSWORD)
    assert PASSWORD not in done.stdout + done.stderr
    short = subprocess.run([sys.executable, "-m", "lamp_cli", "passwd"], input="abc\n", cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert (short.returncode, short.stderr) == (2, "lamp passwd: use at least 8 characters\n")


def test_lamp_up_on_a_network_address_without_a_login_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAMP_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.streamlit/secrets.toml
    monkeypatch.delenv(access.HASH_ENV, raising=False)
    assert launcher.main(["up", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lamp up: --host 0.0.0.0: the dashboard would serve 0.0.0.0 without a login; add accounts "
                          "with `lamp user add NAME [--admin]`, set LAMP_PASSWORD_HASH for one person")
    assert err.count("\n") == 1 and not (tmp_path / "redis").exists()  # nothing was started
    monkeypatch.setenv(access.HASH_ENV, "lamp")
    assert launcher.main(["up", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("lamp up: LAMP_PASSWORD_HASH: not a hash made by `lamp passwd`")


def test_secrets_files_with_an_auth_section_count_as_a_login(tmp_path):
    home = tmp_path / "secrets.toml"
    home.write_text('[auth]\nredirect_uri = "http://h/oauth2callback"\ncookie_secret = "c"\n')
    project = tmp_path / "project.toml"
    project.write_text('[auth]\nclient_id = "i"\nclient_secret = "s"\nserver_metadata_url = "https://i/m"\n')
    project.write_text(project.read_text() + '[lamp]\nallowed_domains = ["lab.example"]\n')
    assert access.oidc_configured(access.section_in_files([home, project]))
    assert not access.oidc_configured(access.section_in_files([home]))
    assert AllowList.configured(access.section_in_files([home, project], "lamp")).allows("ada@lab.example")
    (tmp_path / "bad.toml").write_text("[auth\n")
    with pytest.raises(AccessError, match="bad.toml: not valid TOML"):
        access.section_in_files([tmp_path / "bad.toml"])


@pytest.fixture
def network_dashboard(tmp_path, monkeypatch, redis_url):
    """The app as if bound to 0.0.0.0, on a fresh SQLite store."""
    url = f"sqlite:///{tmp_path / 'lamp.db'}"
    monkeypatch.setenv("LAMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv(access.HASH_ENV, raising=False)
    st_config.set_option("server.address", "0.0.0.0")
    yield
    st_config.set_option("server.address", None)
    dispose(url)


def app_test() -> AppTest:
    return AppTest.from_file(MAIN, default_timeout=30)


def test_a_network_dashboard_with_no_login_configured_serves_nothing(network_dashboard):
    at = app_test().run()
    assert [e.value for e in at.error] == [
        "--host 0.0.0.0: the dashboard would serve 0.0.0.0 without a login; add accounts with `lamp user add NAME "
        "[--admin]`, set LAMP_PASSWORD_HASH for one person (make it with `lamp passwd`), or an [auth] section for "
        "OpenID Connect in ~/.streamlit/secrets.toml, or bind it to 127.0.0.1. The dashboard refuses to serve until "
        "one is set."]
    assert not at.title and not at.text_input


def test_the_password_login_refuses_a_wrong_password_and_records_who_submits(network_dashboard, redis_url):
    add_account("ada", hash_password(PASSWORD), admin=False)
    at = app_test().run()
    assert at.title[0].value == "LAMP Studio" and "Runs" not in [t.value for t in at.title]
    at.text_input(key="login.name").input("ada")
    at.text_input(key="login.password").input("wrong password")
    at.button[0].click().run()
    assert [shown(e.value) for e in at.error] == ["Wrong name or password."]
    assert at.text_input(key="login.password").value == ""  # cleared, never shown back
    at.text_input(key="login.name").input("ada")
    at.text_input(key="login.password").input(PASSWORD)
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Runs"] and not at.error
    at.switch_page("views/launch.py").run()
    at.number_input(key="launch.steps").set_value(2).run()
    at.button(key="launch.submit").click().run()
    with session_scope() as session:
        (run,) = session.query(Run).all()
        assert run.submitted_by == "ada"
    at.switch_page("views/runs.py").run()
    assert at.dataframe[-1].value["submitted by"].tolist() == ["ada"]


def test_an_identity_provider_login_shows_its_button_before_anything_else(network_dashboard, monkeypatch):
    monkeypatch.setenv(access.ALLOWED_DOMAINS_ENV, "lab.example")
    at = app_test()
    at.secrets["auth"] = OIDC
    at.run()
    assert [b.label for b in at.button] == ["Log in"] and not at.error
    assert [t.value for t in at.title] == ["LAMP Studio"]


def test_a_run_queued_from_the_command_line_records_the_os_user(lamp_home, redis_url):
    from lamp_engine.config import RunConfig
    from store.settings import os_user
    from worker import queue

    run_id = queue.submit_run(RunConfig.from_flat({"model": "tiny-t5", "task": "sst2"}))
    with session_scope() as session:
        assert session.get(Run, run_id).submitted_by == os_user() != ""
