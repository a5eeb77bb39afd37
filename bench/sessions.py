"""Commands run in sessions of their own and ended whole: TERM, a grace period, KILL, then a wait until all are gone.

A `lamp worker` takes TERM as a request to finish its job first and RQ gives each job its own process group, so
neither a pid nor a process group reaches everything a command started: its session does (a process leaves it only
by calling setsid, as the embedded Redis does; `end_process` stops such a one by its pid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

POLL_S = 0.2
KILL_WAIT_S = 10  # how long KILLed processes may take to go (one in uninterruptible sleep takes a while)


def running(process: psutil.Process) -> bool:
    """Whether a process still runs: a zombie has ended, though a container's init may be slow to reap it."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def session_members(sid: int) -> list[psutil.Process]:
    """The running processes of a session."""
    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == sid and running(process):
                members.append(process)
        except OSError:  # it ended meanwhile
            continue
    return members


def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll `done` for up to `seconds`; whether it came true."""
    give_up = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= give_up:
            return False
        time.sleep(POLL_S)
    return True


def signal_each(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.Error:  # gone meanwhile
            continue


def end_processes(find: Callable[[], list[psutil.Process]], grace_s: float) -> list[int]:
    """TERM what `find` returns, KILL what is still there after `grace_s`, and wait until it is gone: returns the
    pids that outlived even KILL_WAIT_S after KILL (none, unless the kernel holds one)."""
    signal_each(find(), signal.SIGTERM)
    if wait_until(lambda: not find(), grace_s):
        return []
    give_up = time.monotonic() + KILL_WAIT_S
    while (left := find()) and time.monotonic() < give_up:
        signal_each(left, signal.SIGKILL)  # again each round: one may have forked meanwhile
        time.sleep(POLL_S)
    return [process.pid for process in find()]


def end_session(sid: int, grace_s: float) -> list[int]:
    return end_processes(lambda: session_members(sid), grace_s)


def end_process(pid: int, grace_s: float) -> list[int]:
    try:
        process = psutil.Process(pid)
    except psutil.Error:
        return []
    return end_processes(lambda: [process] if running(process) else [], grace_s)


@dataclass(frozen=True)
class Ended:
    returncode: int
    timed_out: bool
    survivors: list[int]  # pids of the session that KILL did not end


def run_in_session(command: list[str], *, cwd: Path, env: dict[str, str], output: IO | int, limit_s: float,
                   grace_s: float, tick: Callable[[], None] = lambda: None) -> Ended:
    """Run a command in a session of its own under a time limit (calling `tick` while it runs), and end everything
    it started before returning, on an interrupt too: given `grace_s` while the command itself still runs (past
    its limit, or interrupted), none for what it left behind once it has ended (a worker's job, say)."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        give_up = time.monotonic() + limit_s
        while process.poll() is None and time.monotonic() < give_up:
            tick()
            time.sleep(POLL_S)
    finally:
        past_limit = process.poll() is None  # (or interrupted, and then this return is never reached)
        survivors = end_session(process.pid, grace_s if past_limit else 0)
        process.wait()
        tick()
    return Ended(process.returncode, past_limit, survivors)
