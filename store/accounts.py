"""People: the accounts of an exposed dashboard, who is acting, and who may act on a run.

A run belongs to its submitter. Stopping, cancelling, retrying and deleting it is for its owner or an admin;
anyone logged in may view, compare and download it. The queue's functions check this themselves (`authorize`),
so the dashboard's controls and the command line cannot disagree with them.

The command line acts as the OS user. On a local store (a SQLite file) that user is an admin: whoever can run
`lamp` here can open the file anyway. On a shared store (PostgreSQL) the OS user's account, if any, decides; a
holder of DATABASE_URL's credentials can still change anything, so this prevents mistakes, not a determined user.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from lamp_common.errors import LampError
from lamp_common.names import refuse_formula
from lamp_common.passwords import PasswordHash
from store.db import database_url, session_scope
from store.models import Account, Run
from store.settings import os_user

NAME_LENGTH = 200  # the accounts.name and runs.submitted_by columns


class NotAllowed(LampError):
    """Someone acted on a run that is neither theirs nor theirs to manage as an admin."""


class AccountError(LampError):
    """An account name that cannot be used, or one that does not exist."""


@dataclass(frozen=True)
class Actor:
    """Who does something: a login name (or e-mail, or OS user) and whether they are an admin."""

    name: str
    admin: bool = False

    def may_manage(self, owner: str | None) -> bool:
        return self.admin or (owner is not None and owner == self.name)


def local_store() -> bool:
    """Whether the store is a SQLite file on this machine rather than a server other hosts share."""
    return make_url(database_url()).get_backend_name() == "sqlite"


def command_line_actor() -> Actor:
    """The OS user, as the command line and a loopback-only dashboard act: an admin of a local store, else as
    their account in the shared store says."""
    name = os_user()
    return Actor(name, admin=local_store() or is_admin(name))


def authorize(actor: Actor, run: Run, action: str) -> None:
    """Refuse, in one line, an action on a run that is neither the actor's nor theirs to manage."""
    if not actor.may_manage(run.submitted_by):
        owner = run.submitted_by or "nobody recorded"
        raise NotAllowed(f"run {run.id}: only its owner ({owner}) or an admin may {action} it; you are "
                         f"{actor.name}")


def check_name(name: str) -> str:
    """An account name: not empty, no surrounding blanks or control characters, fits the column, no formula."""
    if not name or name != name.strip() or not name.isprintable():
        raise AccountError(f"name: {name!r} is not a usable name; give one without blanks around it or control "
                           "characters")
    if len(name) > NAME_LENGTH:
        raise AccountError(f"name: {len(name)} characters; use at most {NAME_LENGTH}")
    return refuse_formula(name, "name")


def add_account(name: str, password_hash: PasswordHash | None, admin: bool) -> None:
    with session_scope() as session:
        if session.get(Account, check_name(name)) is not None:
            raise AccountError(f"name: {name!r} has an account already; `lamp user passwd {name}` changes its "
                               "password")
        session.add(Account(name=name, password_hash=str(password_hash) if password_hash else None,
                            is_admin=admin))


def _existing(session: Session, name: str) -> Account:
    account = session.get(Account, name)
    if account is None:
        raise AccountError(f"name: no account {name!r}; `lamp user list` shows them")
    return account


def require_account(name: str) -> None:
    """AccountError naming `name` unless it has an account."""
    with session_scope() as session:
        _existing(session, name)


def set_password(name: str, password_hash: PasswordHash) -> None:
    with session_scope() as session:
        _existing(session, name).password_hash = str(password_hash)


def remove_account(name: str) -> None:
    """Remove an account; its runs stay, and an admin can still manage them."""
    with session_scope() as session:
        session.delete(_existing(session, name))


def accounts() -> list[Account]:
    with session_scope() as session:
        return list(session.scalars(select(Account).order_by(Account.name)))


def any_account() -> bool:
    """Whether anyone has an account (then an exposed dashboard asks for a name and a password)."""
    with session_scope() as session:
        return session.scalar(select(Account.name).limit(1)) is not None


def find_account(name: str) -> Account | None:
    with session_scope() as session:
        return session.get(Account, name) if name else None


def is_admin(name: str) -> bool:
    account = find_account(name)
    return account is not None and account.is_admin
