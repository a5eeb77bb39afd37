"""The dashboard's door: the login its bind address requires (app/access.py decides), and who is logged in.

The name of whoever is logged in (the identity provider's e-mail, the name given with the password, or this
machine's user on a loopback-only dashboard) is kept in the session and recorded with every run it submits.
A wrong password waits a second before it is refused; the password field is cleared on every submission and
its value is never written anywhere.
"""

from __future__ import annotations

import time

import streamlit as st

from app.access import AccessError, Login, login_for, password_hash
from app.backend import USER_KEY
from store.settings import os_user

WRONG_PASSWORD_DELAY_S = 1.0


def auth_section() -> dict:
    """The [auth] section of the secrets Streamlit loaded ({} when there is no secrets file)."""
    try:
        return dict(st.secrets.get("auth") or {})
    except FileNotFoundError:
        return {}


def require_login() -> None:
    """Let the visitor in, or draw the login and stop the page (nothing else of the dashboard is drawn)."""
    try:
        login = login_for(st.get_option("server.address"), auth_section())
    except AccessError as exc:
        st.error(f"{exc}. The dashboard refuses to serve until one is set.")
        st.stop()
    if login is Login.NONE:
        st.session_state[USER_KEY] = os_user()
    elif login is Login.OIDC:
        identity_provider_login()
    else:
        password_login()


def identity_provider_login() -> None:
    if not st.user.get("is_logged_in"):
        st.title("LAMP Studio")
        st.button("Log in", type="primary", on_click=st.login, key="login.oidc")
        st.stop()
    st.session_state[USER_KEY] = str(st.user.get("email") or st.user.get("name") or st.user.get("sub"))
    st.sidebar.button("Log out", on_click=st.logout, key="login.logout")


def check_password() -> None:
    """The login form's callback. It runs before the page is drawn, so the password is emptied from the session
    before anything could show it back; a wrong one waits a second and leaves a message for the page."""
    name = st.session_state.get("login.name", "").strip()
    password = st.session_state.get("login.password", "")
    st.session_state["login.password"] = ""
    expected = password_hash()
    if name and expected is not None and expected.matches(password):
        st.session_state[USER_KEY] = name
        return
    time.sleep(WRONG_PASSWORD_DELAY_S)
    st.session_state["login.refused"] = "Wrong name or password." if name else "Give your name and the password."


def password_login() -> None:
    if st.session_state.get(USER_KEY):
        st.sidebar.caption(f"logged in as {st.session_state[USER_KEY]}")
        st.sidebar.button("Log out", on_click=st.session_state.pop, args=(USER_KEY,), key="login.logout")
        return
    st.title("LAMP Studio")
    with st.form("login.form"):
        st.text_input("your name (recorded with the runs you launch)", key="login.name")
        st.text_input("password", type="password", key="login.password")
        st.form_submit_button("Log in", type="primary", on_click=check_password)
    refused = st.session_state.pop("login.refused", None)
    if refused:
        st.error(refused)
    st.stop()
