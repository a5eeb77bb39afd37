"""Service URLs in messages without their passwords, however malformed the URL is.

A URL that its library cannot parse is echoed in errors so that its owner can fix it; parsing it to hide the
password would fail for the same reason, so the password is found by the URL's shape alone
(`scheme://user:password@host`, the last `@` ending it), and every piece of it is hidden from the whole message,
as a parser's own error may quote part of it (e.g. a password with a `/` read as a port).
"""

from __future__ import annotations

import re

HIDDEN = "***"
MIN_PIECE = 3  # shorter pieces of a password are not worth hiding (and would hide ordinary words)


def _userinfo(url: str) -> tuple[str, str, str]:
    """(what comes before the user, the user-and-password part, the rest from its `@`); ('', '', url) without one."""
    head, at, tail = url.rpartition("@")
    if not at:
        return "", "", url
    start = head.find("//") + 2 if "//" in head else 0
    return head[:start], head[start:], at + tail


def password_of(url: str) -> str:
    """The password written in the URL (after the user's `:`), or '' when it has none."""
    return _userinfo(url)[1].partition(":")[2]


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ***."""
    before, userinfo, rest = _userinfo(url)
    user, colon, password = userinfo.partition(":")
    return f"{before}{user}{colon}{HIDDEN}{rest}" if password else url


def hide_password(text: str, url: str) -> str:
    """`text` (a message about `url`) with the URL redacted and every piece of its password hidden."""
    password = password_of(url)
    if not password:
        return text
    text = text.replace(url, redacted_url(url))
    pieces = {password, *re.split(r"[/:?#@\[\]]", password)}
    for piece in sorted((p for p in pieces if len(p) >= MIN_PIECE), key=len, reverse=True):
        text = text.replace(piece, HIDDEN)
    return text
