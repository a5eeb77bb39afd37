"""Passwords: scrypt hashes compared in constant time, and reading a new password from a person or a script.

One definition for the dashboard's one-person LAMP_PASSWORD_HASH (`lamp passwd`) and the store's accounts (`lamp
user add`), so both are hashed and checked alike. A password is never stored, logged or echoed; only its hash is.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import sys
from dataclasses import dataclass
from functools import cache

from lamp_common.errors import LampError

SCHEME = "scrypt"
SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES = 2 ** 14, 8, 1, 32
MIN_LENGTH = 8


class PasswordError(LampError):
    """A stored hash that is not one of ours, or a new password that cannot be used."""


@dataclass(frozen=True)
class PasswordHash:
    """An scrypt hash as `lamp passwd` prints it: scrypt:N:r:p:salt-hex:key-hex (no `$`, safe in .env files)."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, text: str, source: str = "LAMP_PASSWORD_HASH") -> PasswordHash:
        """The hash in `text`; PasswordError naming `source` (where the text came from) when it is not one."""
        parts = text.strip().split(":")
        try:
            if len(parts) != 6 or parts[0] != SCHEME:
                raise ValueError
            n, r, p = (int(part) for part in parts[1:4])
            return cls(n, r, p, bytes.fromhex(parts[4]), bytes.fromhex(parts[5]))
        except ValueError:
            raise PasswordError(f"{source}: not a hash made by `lamp passwd` (scrypt:N:r:p:salt:key); make one "
                                "with `lamp passwd`") from None

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


@cache
def decoy_hash() -> PasswordHash:
    """Checked against when a login names nobody, so an unknown name costs the same scrypt as a known one and the
    time of a refusal does not tell which names exist."""
    return hash_password(os.urandom(16).hex())


def read_new_password(from_stdin: bool = False) -> str:
    """A new password: asked twice on a terminal, else (or with from_stdin) the first line of standard input."""
    if sys.stdin.isatty() and not from_stdin:
        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            raise PasswordError("the two passwords differ; nothing changed")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"use at least {MIN_LENGTH} characters")
    return password
