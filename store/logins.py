"""Failed logins, counted in the store by name and by client address, so guessing is slow for everyone.

A pause inside one browser session does not slow a guesser who opens many sessions, or many processes behind a
load balancer; the store is what they all share. Each attempt is counted as a failure *before* its password is
checked (and forgiven when it was right), so parallel sessions cannot all pass the check before any is counted.
Once a name or an address has its limit of failures within the lock window, further attempts are refused
without checking the password (so no scrypt is spent on them, and a right password is refused too) until the
oldest failures leave the window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from store.db import session_scope
from store.models import LoginFailure, utcnow
from store.settings import login_failures_per_address, login_failures_per_name, login_lock_minutes

NAME_LENGTH, ADDRESS_LENGTH = 200, 64  # the columns' sizes


def _window_start() -> datetime:
    return utcnow() - timedelta(minutes=login_lock_minutes())


def _key(name: str, address: str) -> tuple[str, str]:
    return name[:NAME_LENGTH], address[:ADDRESS_LENGTH]


def begin_attempt(name: str, address: str) -> int | None:
    """Count an attempt as a failure now and return its id; None when the name or the address is locked (then
    nothing is counted, and the caller must refuse without checking the password)."""
    name, address = _key(name, address)
    since = _window_start()
    with session_scope() as session:
        session.execute(delete(LoginFailure).where(LoginFailure.at < since))  # the table stays small
        failure = LoginFailure(name=name, address=address, at=utcnow())
        session.add(failure)
        session.flush()
        counted = select(func.count()).select_from(LoginFailure).where(LoginFailure.id <= failure.id,
                                                                        LoginFailure.at >= since)
        by_name = session.scalar(counted.where(LoginFailure.name == name))
        by_address = session.scalar(counted.where(LoginFailure.address == address))
        if by_name > login_failures_per_name() or by_address > login_failures_per_address():
            session.delete(failure)
            return None
        return failure.id


def forgive(name: str) -> None:
    """A right password: the name's earlier failures no longer count (its address's still do)."""
    with session_scope() as session:
        session.execute(delete(LoginFailure).where(LoginFailure.name == _key(name, "")[0]))

