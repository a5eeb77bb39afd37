"""The dashboard's door: the login its bind address requires (app/access.py decides), and who is logged in.

Whoever is logged in (the identity provider's e-mail, an account's name, or this machine's user on a
loopback-only dashboard) and whether they are an admin are re-read on every page run, so a removed account is
logged out at once; the name is recorded with every run it submits. A wrong password waits a second before it is
refused; the password field is cleared on every submission and its value is never written anywhere. Logging out
forgets everything the session held.
"""

from __future__ import annotations

import time

import streamlit as st

from app.access import (
    AccessError,
    AllowList,
    Login,
    LoginLocked,
    LoginRefused,
    authenticate,
    client_address,
    identity_actor,
    login_for,
    password_actor,
)
from app.backend import ADMIN_KEY, USER_KEY
from app.ui import plain
from lamp_common.errors import LampError
from store.accounts import Actor, any_account, command_line_actor

WRONG_PASSWORD_DELAY_S = 1.0


def secrets_section(name: str) -> dict:
    """A section ([auth], [lamp]) of the secrets Streamlit loaded ({} when there is no secrets file)."""
    try:
        return dict(st.secrets.get(name) or {})
    except FileNotFoundError:
        return {}


def require_login() -> None:
    """Let the visitor in, or draw the login and stop the page (nothing else of the dashboard is drawn)."""
    allowed = AllowList.configured(secrets_section("lamp"))
    try:
        login = login_for(st.get_option("server.address"), secrets_section("auth"), allowed, any_account)
        if login is Login.NONE:
            enter(command_line_actor())
    except AccessError as exc:  # the operator's configuration, in the operator's words
        st.error(f"{exc}. The dashboard refuses to serve until one is set.")
        st.stop()
        return  # st.stop() returns instead of raising where no script runs (bare mode)
    except LampError as exc:  # the store cannot be read: a bad or unreachable DATABASE_URL
        st.error(str(exc))
        st.stop()
        return
    if login is Login.OIDC:
        identity_provider_login(allowed)
    elif login is Login.PASSWORD:
        password_login()


def enter(actor: Actor) -> None:
    st.session_state[USER_KEY] = actor.name
    st.session_state[ADMIN_KEY] = actor.admin


def log_out() -> None:
    """Forget everything the session held (its login, forms, pending predictions), so whoever uses this browser
    next starts from nothing, and the live sections it left behind stop drawing (app/ui.py's `live`)."""
    st.session_state.clear()


def log_out_of_provider() -> None:
    log_out()
    st.logout()


def show_who(on_log_out: object) -> None:
    role = " (admin)" if st.session_state.get(ADMIN_KEY) else ""
    st.sidebar.caption(plain(f"logged in as {st.session_state[USER_KEY]}{role}"))
    st.sidebar.button("Log out", on_click=on_log_out, key="login.logout")


def visitor_address() -> str:
    return client_address(st.context.ip_address, st.context.headers.get("X-Forwarded-For"))


def identity_provider_login(allowed: AllowList) -> None:
    if not st.user.get("is_logged_in"):
        st.title("LAMP Studio")
        st.button("Log in", type="primary", on_click=st.login, key="login.oidc")
        st.stop()
    try:
        enter(identity_actor(st.user.to_dict(), allowed, visitor_address()))
    except LoginRefused as exc:
        st.title("LAMP Studio")
        st.button("Log out", on_click=log_out_of_provider, key="login.logout")
        st.error(plain(exc))
        st.stop()
    show_who(log_out_of_provider)


def check_password() -> None:
    """The login form's callback. It runs before the page is drawn, so the password is emptied from the session
    before anything could show it back; a wrong one waits a second and leaves a message for the page."""
    name = st.session_state.get("login.name", "").strip()
    password = st.session_state.get("login.password", "")
    st.session_state["login.password"] = ""
    if not name or not password:
        st.session_state["login.refused"] = "Give your name and your password."
        return
    try:
        enter(authenticate(name, password, visitor_address()))
    except LoginLocked as exc:
        st.session_state["login.refused"] = str(exc)
    except LoginRefused as exc:
        time.sleep(WRONG_PASSWORD_DELAY_S)
        st.session_state["login.refused"] = str(exc)


def password_login() -> None:
    name = st.session_state.get(USER_KEY)
    actor = password_actor(name) if name else None
    if actor is not None:
        enter(actor)
        show_who(log_out)
        return
    if name:  # the account was removed, or lost its password, since this session logged in
        log_out()
    st.title("LAMP Studio")
    with st.form("login.form"):
        st.text_input("name", key="login.name")
        st.text_input("password", type="password", key="login.password")
        st.form_submit_button("Log in", type="primary", on_click=check_password)
    refused = st.session_state.pop("login.refused", None)
    if refused:
        st.error(plain(refused))
    st.stop()
