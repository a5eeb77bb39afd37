"""Who may use the dashboard, decided without Streamlit: the launcher and the app ask the same questions.

Bound to a loopback address the dashboard stays open to this machine's users, acting as the OS user that runs
it. Bound to anything else it asks for a login:
- OpenID Connect through Streamlit's `st.login` when `.streamlit/secrets.toml` has an `[auth]` section, for the
  e-mails and domains allowed (LAMP_ALLOWED_EMAILS, LAMP_ALLOWED_DOMAINS, or a `[lamp]` section of the secrets);
  with no allow-list it refuses to serve, as any account of a public provider would get in;
- else a name and a password: an account of the store (`lamp user add`), or the one-person LAMP_PASSWORD_HASH,
  which logs in as `admin` (`lamp passwd` makes it).
With none of these, it refuses to serve. A password is never stored, logged or echoed; only its scrypt hash is
compared, in constant time. Failed logins are counted in the store by name and client address (store/logins.py)
and each is logged with both, never with the password.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from lamp_common.errors import LampError
from lamp_common.passwords import PasswordHash, decoy_hash, hash_password, read_new_password
from store.accounts import Actor, find_account, is_admin
from store.logins import begin_attempt, forgive
from store.settings import env_flag, login_lock_minutes

HASH_ENV = "LAMP_PASSWORD_HASH"
ONE_PERSON = "admin"  # the name LAMP_PASSWORD_HASH logs in as: one person, an admin
ALLOWED_EMAILS_ENV, ALLOWED_DOMAINS_ENV = "LAMP_ALLOWED_EMAILS", "LAMP_ALLOWED_DOMAINS"
BEHIND_TLS_ENV = "LAMP_BEHIND_TLS"
OIDC_KEYS = ("client_id", "client_secret", "server_metadata_url")
ROOT = Path(__file__).resolve().parents[1]
HOW_TO_SET_ONE = (f"add accounts with `lamp user add NAME [--admin]`, set {HASH_ENV} for one person (make it with "
                  "`lamp passwd`), or an [auth] section for OpenID Connect in ~/.streamlit/secrets.toml")
HOW_TO_ALLOW = (f"set {ALLOWED_EMAILS_ENV} or {ALLOWED_DOMAINS_ENV} (comma-separated), or allowed_emails / "
                "allowed_domains in a [lamp] section of secrets.toml")
WRONG_LOGIN = "Wrong name or password."
log = logging.getLogger(__name__)


class AccessError(LampError):
    """The dashboard would be reachable from the network with no way to log in, or its login is misconfigured."""


class LoginRefused(LampError):
    """What the login page tells a refused visitor (never whether the name they gave exists)."""


class LoginLocked(LoginRefused):
    """Refused without checking the password: the name or the address has had too many failures."""


class Login(StrEnum):
    NONE = "none"  # bound to loopback: open to this machine's users
    OIDC = "oidc"  # Streamlit's st.login with the identity provider of secrets.toml
    PASSWORD = "password"  # a name and a password: the store's accounts, or the one-person LAMP_PASSWORD_HASH


def bound_to_loopback(address: str | None) -> bool:
    """Whether the server listens on loopback only. No address means every interface (Streamlit's default)."""
    if address == "localhost":
        return True
    try:
        return bool(address) and ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def oidc_configured(auth: Mapping[str, Any] | None) -> bool:
    """An [auth] section complete enough for st.login: the shared keys and one provider (default or named)."""
    if not auth or not {"redirect_uri", "cookie_secret"} <= set(auth):
        return False
    providers = [auth, *(value for value in auth.values() if isinstance(value, Mapping))]
    return any(all(key in provider for key in OIDC_KEYS) for provider in providers)


def secrets_files() -> list[Path]:
    """The secrets.toml files Streamlit reads for the dashboard `lamp up` starts (home, working folder, app)."""
    return [Path.home() / ".streamlit" / "secrets.toml", ROOT / ".streamlit" / "secrets.toml",
            ROOT / "app" / ".streamlit" / "secrets.toml"]


def section_in_files(paths: list[Path], name: str = "auth") -> dict[str, Any]:
    """A section ([auth], [lamp]) as Streamlit would merge it from these files (later files win)."""
    section: dict[str, Any] = {}
    for path in paths:
        if path.is_file():
            try:
                section.update(tomllib.loads(path.read_text()).get(name) or {})
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise AccessError(f"{path}: not valid TOML ({exc}); fix it or remove it") from None
    return section


def _entries(value: str | Iterable[str] | None) -> set[str]:
    """Comma-separated text or a list, as lower-case entries without blanks (and a domain's leading `@`)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return {str(item).strip().lower().lstrip("@") for item in items if str(item).strip()}


@dataclass(frozen=True)
class AllowList:
    """Whom an identity provider may log in: these e-mails, and every e-mail of these domains."""

    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def configured(cls, section: Mapping[str, Any] | None) -> AllowList:
        """LAMP_ALLOWED_EMAILS and LAMP_ALLOWED_DOMAINS, with the [lamp] section's allowed_emails and
        allowed_domains of secrets.toml."""
        section = section or {}
        return cls(frozenset(_entries(os.environ.get(ALLOWED_EMAILS_ENV)) | _entries(section.get("allowed_emails"))),
                   frozenset(_entries(os.environ.get(ALLOWED_DOMAINS_ENV)) | _entries(section.get("allowed_domains"))))

    def __bool__(self) -> bool:
        return bool(self.emails or self.domains)

    def allows(self, email: str) -> bool:
        email = email.strip().lower()
        return "@" in email and (email in self.emails or email.rpartition("@")[2] in self.domains)


def password_hash() -> PasswordHash | None:
    """The operator's password hash (LAMP_PASSWORD_HASH), checked; None when unset."""
    text = os.environ.get(HASH_ENV, "").strip()
    return PasswordHash.parse(text) if text else None


def login_for(address: str | None, auth: Mapping[str, Any] | None, allowed: AllowList,
              any_account: Callable[[], bool]) -> Login:
    """Which login a dashboard bound to `address` requires; AccessError when it would need one and has none, or
    when its identity provider would let in anyone (no allow-list). The store is asked for accounts only when
    nothing else decides."""
    if bound_to_loopback(address):
        return Login.NONE
    host = address or "0.0.0.0"
    if oidc_configured(auth):
        if not allowed:
            raise AccessError(f"--host {host}: OpenID Connect ([auth] in secrets.toml) would let in anyone its "
                              f"identity provider knows; {HOW_TO_ALLOW}")
        return Login.OIDC
    if password_hash() is not None or any_account():
        return Login.PASSWORD
    raise AccessError(f"--host {host}: the dashboard would serve {address or 'every interface'} without a login; "
                      f"{HOW_TO_SET_ONE}, or bind it to 127.0.0.1")


def behind_tls() -> bool:
    """Whether a reverse proxy terminates TLS in front of the dashboard (LAMP_BEHIND_TLS, set by the operator)."""
    return env_flag(BEHIND_TLS_ENV)


def plain_http_warning(address: str | None) -> str | None:
    """The warning for a dashboard that serves the network over plain HTTP, where passwords and session cookies
    cross the wire readable; None on loopback or behind TLS."""
    if bound_to_loopback(address) or behind_tls():
        return None
    return (f"warning: the dashboard serves {address or 'every interface'} over plain HTTP, so passwords and "
            "session cookies cross the network readable; put the TLS proxy in front (`docker compose --profile "
            f"tls up -d`, see README) and set {BEHIND_TLS_ENV}=1")


def _ip(text: object) -> str | None:
    """`text` as an IP address in its usual spelling, or None when it is not one."""
    try:
        return str(ipaddress.ip_address(str(text).strip()))
    except ValueError:
        return None


def client_address(peer: object, forwarded_for: object) -> str:
    """The client's address, by which failed logins are counted. Behind the TLS proxy it is the last entry of
    X-Forwarded-For (the one the proxy wrote; earlier ones come from the client and may be forged); else the
    connection's peer, which Streamlit gives as None for loopback. Only an IP address is taken, so whatever a
    client sends cannot reach the log as anything else."""
    if behind_tls() and isinstance(forwarded_for, str) and forwarded_for.strip():
        return _ip(forwarded_for.split(",")[-1]) or "unknown"
    return _ip(peer) or "127.0.0.1"


def _expected_hash(name: str) -> PasswordHash | None:
    """The hash `name` logs in with: its account's, else LAMP_PASSWORD_HASH's for the one-person name."""
    account = find_account(name)
    if account is not None:
        return PasswordHash.parse(account.password_hash, f"account {name}") if account.password_hash else None
    return password_hash() if name == ONE_PERSON else None


def password_actor(name: str) -> Actor | None:
    """Who a password session is, re-read on every page so a removed account is logged out at once; None when
    `name` can no longer log in with a password."""
    account = find_account(name)
    if account is not None:
        return Actor(name, admin=account.is_admin) if account.password_hash else None
    return Actor(name, admin=True) if name == ONE_PERSON and password_hash() is not None else None


def authenticate(name: str, password: str, address: str) -> Actor:
    """The person whose name and password these are, or LoginRefused. The attempt is counted before the password
    is checked; a locked name or address is refused without checking it. One log line per refusal, with the name
    and the address, never the password."""
    if begin_attempt(name, address) is None:
        log.warning("login failed: name %r from %s: locked after too many failures", name, address)
        raise LoginLocked(f"Too many failed logins for this name or from this address; try again in "
                           f"{login_lock_minutes():g} minutes.")
    expected = _expected_hash(name)
    right = (expected or decoy_hash()).matches(password)  # an unknown name costs the same time
    actor = password_actor(name) if right and expected is not None else None
    if actor is None:
        log.warning("login failed: name %r from %s: wrong name or password", name, address)
        raise LoginRefused(WRONG_LOGIN)
    forgive(name)
    return actor


def identity_actor(user: Mapping[str, Any], allowed: AllowList, address: str) -> Actor:
    """The person an identity provider logged in (by their e-mail, in lower case), if that e-mail is verified and
    allowed; else LoginRefused."""
    email = str(user.get("email") or "").strip().lower()
    if user.get("email_verified") is False or not allowed.allows(email):
        log.warning("login failed: identity %r from %s: not in the allowed e-mails or domains", email, address)
        raise LoginRefused(f"{email or 'This identity'} may not use this dashboard; its operator can allow it in "
                           f"{ALLOWED_EMAILS_ENV} or {ALLOWED_DOMAINS_ENV}.")
    return Actor(email, admin=is_admin(email))


def main(argv: list[str]) -> int:
    """`lamp passwd`: read a password (twice on a terminal, once from a pipe) and print the line for .env."""
    if argv[1:] in (["-h"], ["--help"]):
        print(f"usage: lamp passwd\n\nRead a password and print {HASH_ENV}=... (its scrypt hash) for the .env file "
              f"or the environment of `lamp up --host ADDRESS`: one person, who logs in as `{ONE_PERSON}`, an admin "
              "(for several people, `lamp user add NAME`). The password itself is not printed or stored.")
        return 0
    if argv[1:]:
        print(f"lamp passwd: unexpected arguments {' '.join(argv[1:])} (see --help)", file=sys.stderr)
        return 2
    try:
        password = read_new_password()
    except LampError as exc:
        print(f"lamp passwd: {exc}", file=sys.stderr)
        return 2
    print(f"{HASH_ENV}={hash_password(password)}")
    return 0
