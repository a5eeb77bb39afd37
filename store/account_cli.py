"""`lamp user add|list|remove|passwd`: the accounts an exposed dashboard logs people in with.

A password is asked twice on a terminal, or read from the first line of standard input (`--password-stdin`, or
any pipe) for scripts; it is hashed with scrypt before it reaches the store and never printed.
"""

from __future__ import annotations

import argparse
import sys

from lamp_common.cli import OneLineParser
from lamp_common.errors import LampError
from lamp_common.passwords import hash_password, read_new_password
from store import accounts


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="lamp user", description="manage the accounts of the dashboard (in the store at "
                                                         "DATABASE_URL)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{add,list,remove,passwd}")
    add = commands.add_parser("add", help="add an account (asks for its password)")
    add.add_argument("name", help="the login name, recorded with the runs this person launches")
    add.add_argument("--admin", action="store_true", help="may stop, cancel, retry and delete anyone's runs")
    add.add_argument("--no-password", action="store_true",
                     help="an identity-provider login (NAME is its e-mail): no password; use with --admin")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    commands.add_parser("list", help="list the accounts")
    remove = commands.add_parser("remove", help="remove an account (its runs stay)")
    remove.add_argument("name")
    passwd = commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def run(args: argparse.Namespace) -> str:
    """Do what the arguments say; returns the line to print."""
    if args.command == "list":
        rows = [f"{a.name}\t{'admin' if a.is_admin else 'user'}\t{'password' if a.password_hash else 'no password'}"
                for a in accounts.accounts()]
        return "\n".join(rows) if rows else "no accounts (`lamp user add NAME --admin` adds one)"
    if args.command == "remove":
        accounts.remove_account(args.name)
        return f"removed {args.name}"
    if args.command == "passwd":
        accounts.require_account(args.name)  # before asking for a password
        accounts.set_password(args.name, hash_password(read_new_password(args.password_stdin)))
        return f"password of {args.name} changed"
    accounts.check_name(args.name)  # before asking for a password
    password = None if args.no_password else hash_password(read_new_password(args.password_stdin))
    accounts.add_account(args.name, password, admin=args.admin)
    return f"added {args.name}{' (admin)' if args.admin else ''}"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv[1:])
    try:
        print(run(args))
    except LampError as exc:
        print(f"lamp user {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0
