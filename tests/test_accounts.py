"""People in the store: `lamp user` accounts, runs that belong to their submitter, what only an owner or an admin
may do (stop, cancel, retry, delete) and the record of who did it, on SQLite and PostgreSQL with a real Redis."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lamp_common.errors import LampError
from lamp_common.passwords import PasswordHash
from lamp_engine.config import RunConfig
from store import account_cli
from store.accounts import Actor, NotAllowed, accounts, add_account, check_name, find_account
from store.audit import Action, actions_on
from store.db import session_scope
from store.files import store_run_file
from store.models import Account, Blob, MetricPoint, Run, RunFile, Sweep
from store.queries import UnknownRun, get_run, list_runs
from store.settings import os_user
from worker import queue

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "tiny-t5", "task": "sst2", "steps": 2, "batch_size": 2, "length": 4, "rank": 2}
ALICE, BOB, ADMIN = Actor("alice"), Actor("bob"), Actor("root", admin=True)
SECRET = "alpine-meadow-1729"


def tiny_config(**overrides) -> RunConfig:
    return RunConfig.from_flat({**TINY, **overrides})


def lamp(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lamp_cli", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          input=stdin, timeout=120)


def user(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`lamp user ARGS` in this process, its standard input a pipe holding `stdin`."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = account_cli.main(["user", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_lamp_user_adds_lists_changes_and_removes_accounts(database_url, monkeypatch, capsys):
    assert user(monkeypatch, capsys, "add", "alice", stdin=SECRET + "\n") == (0, "added alice\n", "")
    assert user(monkeypatch, capsys, "add", "root", "--admin", "--password-stdin", stdin=SECRET + "\n")[0] == 0
    assert user(monkeypatch, capsys, "add", "ada@lab.example", "--admin", "--no-password") == (
        0, "added ada@lab.example (admin)\n", "")
    assert user(monkeypatch, capsys, "list")[1] == ("ada@lab.example\tadmin\tno password\nalice\tuser\tpassword\n"
                                                    "root\tadmin\tpassword\n")
    stored = find_account("alice").password_hash
    assert PasswordHash.parse(stored).matches(SECRET) and SECRET not in stored

    assert user(monkeypatch, capsys, "add", "alice", stdin=SECRET + "\n") == (
        2, "", "lamp user add: name: 'alice' has an account already; `lamp user passwd alice` changes its password\n")
    assert user(monkeypatch, capsys, "add", "bob", stdin="short\n") == (
        2, "", "lamp user add: use at least 8 characters\n")
    assert user(monkeypatch, capsys, "passwd", "carol", stdin=SECRET + "\n") == (
        2, "", "lamp user passwd: name: no account 'carol'; `lamp user list` shows them\n")
    assert user(monkeypatch, capsys, "passwd", "alice", stdin="another-secret-9\n") == (
        0, "password of alice changed\n", "")
    assert PasswordHash.parse(find_account("alice").password_hash).matches("another-secret-9")
    assert user(monkeypatch, capsys, "remove", "alice") == (0, "removed alice\n", "")
    assert [account.name for account in accounts()] == ["ada@lab.example", "root"]


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)"])
def test_a_name_that_a_spreadsheet_would_run_as_a_formula_is_refused(name):
    with pytest.raises(LampError, match=r"^name: .* starts with '[=+\-@]', which a spreadsheet runs as a formula"):
        check_name(name)


@pytest.mark.parametrize("name", ["", " alice", "bob ", "eve\nroot", "x" * 201])
def test_an_unusable_account_name_is_one_line(name):
    with pytest.raises(LampError, match="^name: "):
        check_name(name)


def test_lamp_user_is_a_lamp_command_that_never_prints_the_password(lamp_home):
    done = lamp("user", "add", "=cmd|' /C calc'!A0", stdin=SECRET + "\n")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("lamp user add: name: \"=cmd|' /C calc'!A0\" starts with '='")
    done = lamp("user", "add", "alice", "--admin", stdin=SECRET + "\n")
    assert (done.returncode, done.stdout, done.stderr) == (0, "added alice (admin)\n", "")
    assert SECRET not in done.stdout + done.stderr
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 1


def test_free_text_that_reaches_the_shared_tables_refuses_a_formula(database_url, redis_url):
    with pytest.raises(LampError, match="^model: '@SUM\\(A1\\)' starts with '@'"):
        queue.submit_run(tiny_config(model="@SUM(A1)"))
    with pytest.raises(LampError, match="^sweep name: '=1\\+1' starts with '='"):
        queue.submit_sweep([tiny_config()], {"seed": [1]}, "=1+1")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
        assert session.scalar(select(func.count()).select_from(Sweep)) == 0
    assert queue.get_queue().count == 0


def test_only_the_owner_or_an_admin_cancels_and_retries_and_each_action_is_recorded(database_url, redis_url):
    mine, other = (queue.submit_run(tiny_config(seed=seed), submitted_by="alice") for seed in (1, 2))
    with pytest.raises(NotAllowed, match=f"^run {mine}: only its owner \\(alice\\) or an admin may cancel it; you "
                                         "are bob$"):
        queue.cancel_run(mine, BOB)
    assert queue.cancel_run(mine, ALICE) == "cancelled"
    assert queue.cancel_run(other, ADMIN) == "cancelled"
    with pytest.raises(NotAllowed, match="may retry it; you are bob"):
        queue.retry_run(mine, BOB)
    retried = queue.retry_run(mine, ALICE)
    with session_scope() as session:
        assert get_run(session, retried).submitted_by == "alice"
        assert [(a.action, a.actor, a.detail) for a in actions_on(session, mine)] == [
            (Action.CANCEL, "alice", None), (Action.RETRY, "alice", f"as run {retried}")]
        (cancelled,) = actions_on(session, other)
        assert (cancelled.action, cancelled.actor) == (Action.CANCEL, "root")
        assert str(cancelled).startswith("cancelled by root at ") and str(cancelled).endswith(" UTC")
        assert get_run(session, other).status == "cancelled"


def test_a_running_run_is_stopped_by_its_owner_or_an_admin_only(database_url, redis_url):
    run_id = queue.submit_run(tiny_config(), submitted_by="alice")
    with session_scope() as session:
        get_run(session, run_id).status = "running"
    with pytest.raises(NotAllowed):
        queue.cancel_run(run_id, BOB, force=True)
    assert queue.cancel_run(run_id, ADMIN) == "stop requested"
    with session_scope() as session:
        assert get_run(session, run_id).stop_requested
        assert [(a.action, a.actor) for a in actions_on(session, run_id)] == [(Action.STOP, "root")]


def finished_run_with_files(tmp_path: Path, owner: str) -> int:
    """A succeeded run of `owner` with one stored file and two metric points."""
    with session_scope() as session:
        run = Run(config=tiny_config().to_dict(), method="lamp", model="tiny-t5", task="sst2", status="succeeded",
                  submitted_by=owner, progress=1.0, step=2)
        session.add(run)
        session.flush()
        session.add_all([MetricPoint(run_id=run.id, step=step, key="loss", value=1.0) for step in (1, 2)])
        prompt = tmp_path / f"prompt-{run.id}.bin"
        prompt.write_bytes(f"the prompt of run {run.id}".encode())
        store_run_file(session, run.id, "prompt.safetensors", prompt)
        return run.id


def test_delete_removes_a_finished_runs_files_and_keeps_its_record(database_url, redis_url, tmp_path):
    run_id = finished_run_with_files(tmp_path, "alice")
    active = queue.submit_run(tiny_config(), submitted_by="alice")
    with pytest.raises(NotAllowed, match="may delete it; you are bob"):
        queue.delete_run(run_id, BOB)
    with pytest.raises(LampError, match=f"^run {active}: is queued; cancel it first"):
        queue.delete_run(active, ALICE)
    queue.delete_run(run_id, ALICE)
    with session_scope() as session:
        assert [run.id for run in list_runs(session)] == [active]
        with pytest.raises(UnknownRun, match=f"^run {run_id}: deleted at .* UTC; `lamp status {run_id}` shows who"):
            get_run(session, run_id)
        assert get_run(session, run_id, deleted_too=True).deleted_at is not None
        for table in (RunFile, MetricPoint):
            assert session.scalar(select(func.count()).select_from(table).where(table.run_id == run_id)) == 0
        assert session.scalar(select(func.count()).select_from(Blob)) == 0  # no other run held those bytes
        assert [(a.action, a.actor) for a in actions_on(session, run_id)] == [(Action.DELETE, "alice")]
    status = lamp("status", str(run_id), "--json")
    assert status.returncode == 0, status.stderr
    data = json.loads(status.stdout)
    assert data["deleted_at"] and [(a["action"], a["by"]) for a in data["actions"]] == [("delete", "alice")]


def test_the_command_line_acts_as_the_os_user_an_admin_of_a_local_store_only(database_url, redis_url):
    """On SQLite the OS user is an admin; on a shared PostgreSQL store it needs an admin account for others' runs."""
    run_id = queue.submit_run(tiny_config(), submitted_by="alice")
    refused = lamp("cancel", str(run_id))
    if database_url.startswith("sqlite"):
        assert (refused.returncode, refused.stdout) == (0, f"run {run_id}: cancelled\n")
    else:
        assert (refused.returncode, refused.stderr) == (
            2, f"lamp cancel: run {run_id}: only its owner (alice) or an admin may cancel it; you are {os_user()}\n")
        add_account(os_user(), None, admin=True)
        assert lamp("cancel", str(run_id)).stdout == f"run {run_id}: cancelled\n"
    status = lamp("status", str(run_id))
    assert status.returncode == 0, status.stderr
    (line,) = [line for line in status.stdout.splitlines() if line.strip().startswith("actions:")]
    assert line.split(": ", 1)[1].startswith(f"cancelled by {os_user()} at ")
