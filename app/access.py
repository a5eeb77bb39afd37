"""Who may use the dashboard, decided without Streamlit: the launcher and the app ask the same questions.

Bound to a loopback address the dashboard stays open to this machine's users. Bound to anything else it asks
for a login: OpenID Connect through Streamlit's `st.login` when `.streamlit/secrets.toml` has an `[auth]`
section, else a password whose scrypt hash the operator gives in LAMP_PASSWORD_HASH (`lamp passwd` makes one).
With neither, it refuses to serve. The password itself is never stored, logged or echoed; only its hash is
compared, in constant time.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from lamp_common.errors import LampError

HASH_ENV = "LAMP_PASSWORD_HASH"
SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES = 2 ** 14, 8, 1, 32
OIDC_KEYS = ("client_id", "client_secret", "server_metadata_url")
ROOT = Path(__file__).resolve().parents[1]
HOW_TO_SET_ONE = (f"set {HASH_ENV} (make one with `lamp passwd`), or an [auth] section for OpenID Connect in "
                  "~/.streamlit/secrets.toml")


class AccessError(LampError):
    """The dashboard would be reachable from the network with no way to log in, or its login is misconfigured."""


class Login(StrEnum):
    NONE = "none"  # bound to loopback: open to this machine's users
    OIDC = "oidc"  # Streamlit's st.login with the identity provider of secrets.toml
    PASSWORD = "password"  # the operator's password hash


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


def auth_section_in_files(paths: list[Path]) -> dict[str, Any]:
    """The [auth] section as Streamlit would merge it from these files (later files win)."""
    section: dict[str, Any] = {}
    for path in paths:
        if path.is_file():
            try:
                section.update(tomllib.loads(path.read_text()).get("auth") or {})
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise AccessError(f"{path}: not valid TOML ({exc}); fix it or remove it") from None
    return section


@dataclass(frozen=True)
class PasswordHash:
    """An scrypt hash as `lamp passwd` prints it: scrypt:N:r:p:salt-hex:key-hex (no `$`, safe in .env files)."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        parts = text.strip().split(":")
        try:
            if len(parts) != 6 or parts[0] != SCHEME:
                raise ValueError
            n, r, p = (int(part) for part in parts[1:4])
            return cls(n, r, p, bytes.fromhex(parts[4]), bytes.fromhex(parts[5]))
        except ValueError:
            raise AccessError(f"{HASH_ENV}: not a hash made by `lamp passwd` (scrypt:N:r:p:salt:key); make one with "
                              "`lamp passwd`") from None

    def matches(self, password: str) -> bool:
        key = hashlib.scrypt(password.encode(), salt=self.salt, n=self.n, r=self.r, p=self.p,
                             dklen=len(self.key), maxmem=2 ** 26)
        return hmac.compare_digest(key, self.key)

    def __str__(self) -> str:
        return f"{SCHEME}:{self.n}:{self.r}:{self.p}:{self.salt.hex()}:{self.key.hex()}"


def hash_password(password: str) -> PasswordHash:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES)
    return PasswordHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, key)


def password_hash() -> PasswordHash | None:
    """The operator's password hash (LAMP_PASSWORD_HASH), checked; None when unset."""
    text = os.environ.get(HASH_ENV, "").strip()
    return PasswordHash.parse(text) if text else None


def login_for(address: str | None, auth: Mapping[str, Any] | None) -> Login:
    """Which login a dashboard bound to `address` requires; AccessError when it would need one and has none."""
    if bound_to_loopback(address):
        return Login.NONE
    if oidc_configured(auth):
        return Login.OIDC
    if password_hash() is not None:
        return Login.PASSWORD
    where = address or "every interface"
    raise AccessError(f"--host {address or '0.0.0.0'}: the dashboard would serve {where} without a login; "
                      f"{HOW_TO_SET_ONE}, or bind it to 127.0.0.1")


def main(argv: list[str]) -> int:
    """`lamp passwd`: read a password (twice on a terminal, once from a pipe) and print the line for .env."""
    if argv[1:] in (["-h"], ["--help"]):
        print(f"usage: lamp passwd\n\nRead a password and print {HASH_ENV}=... (its scrypt hash) for the .env file "
              "or the environment of `lamp up --host ADDRESS`. The password itself is not printed or stored.")
        return 0
    if argv[1:]:
        print(f"lamp passwd: unexpected arguments {' '.join(argv[1:])} (see --help)", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("lamp passwd: the two passwords differ; nothing printed", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("lamp passwd: use at least 8 characters", file=sys.stderr)
        return 2
    print(f"{HASH_ENV}={hash_password(password)}")
    return 0
