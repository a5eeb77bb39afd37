"""Numbers an operator sets through the environment, each read and checked in one place.

A bad value stops the process that reads it with one line naming the variable and what it accepts, instead of
a traceback in the middle of a run.
"""

from __future__ import annotations

import getpass
import os
import socket

from lamp_common.errors import LampError

MB = 1024 * 1024


class SettingError(LampError):
    """An environment variable holds a value its reader cannot use."""


def env_number(name: str, default: float, minimum: float = 0.0) -> float:
    """The variable as a number >= minimum, or `default` when it is unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        raise SettingError(f"{name}: {text!r} is not a number; set a number >= {minimum:g} or unset it "
                           f"(default {default:g})") from None
    if value < minimum:
        raise SettingError(f"{name}: {value:g} is below {minimum:g}; set a number >= {minimum:g} or unset it "
                           f"(default {default:g})")
    return value


def stored_file_limit() -> int:
    """Bytes above which a run file stays on its worker's disk instead of the store (LAMP_MAX_STORED_FILE_MB)."""
    return int(env_number("LAMP_MAX_STORED_FILE_MB", 256) * MB)


def max_sweep_runs() -> int:
    """Runs one sweep may queue; a larger grid is refused before it is expanded (LAMP_MAX_SWEEP_RUNS)."""
    return int(env_number("LAMP_MAX_SWEEP_RUNS", 500, minimum=1))


def queue_quota() -> int:
    """Queued runs one person may have waiting at once, so one person's sweep cannot fill the GPUs' queue for
    days (LAMP_QUEUE_QUOTA)."""
    return int(env_number("LAMP_QUEUE_QUOTA", 50, minimum=1))


def predictions_per_minute() -> int:
    """Try-it predictions one person may ask for per minute; workers serve predictions before training, so this
    keeps a flood of them from starving training (LAMP_PREDICTIONS_PER_MINUTE)."""
    return int(env_number("LAMP_PREDICTIONS_PER_MINUTE", 10, minimum=1))


def max_upload_mb() -> int:
    """Megabytes a dashboard upload may have; Streamlit refuses a larger one before it is read, and the Launch form
    checks it again (LAMP_MAX_UPLOAD_MB)."""
    return int(env_number("LAMP_MAX_UPLOAD_MB", 100, minimum=1))


def store_patience_s() -> float:
    """How long a worker keeps retrying a write while the store is unreachable (LAMP_STORE_PATIENCE_S)."""
    return env_number("LAMP_STORE_PATIENCE_S", 600)


def auto_retries() -> int:
    """How many times in a row a run whose worker died (found by reconcile) is queued again, resuming from its
    checkpoint; 0 leaves it failed (LAMP_AUTO_RETRY)."""
    value = env_number("LAMP_AUTO_RETRY", 1)
    if not value.is_integer():
        raise SettingError(f"LAMP_AUTO_RETRY: {value:g} is not a whole number of retries; set e.g. 1, or 0 for none")
    return int(value)


def login_failures_per_name() -> int:
    """Failed logins for one name within the lock window that lock it (LAMP_LOGIN_FAILURES_PER_NAME)."""
    return int(env_number("LAMP_LOGIN_FAILURES_PER_NAME", 5, minimum=1))


def login_failures_per_address() -> int:
    """Failed logins from one client address within the lock window that lock it; higher than per name, as a
    lab behind one NAT address shares it (LAMP_LOGIN_FAILURES_PER_ADDRESS)."""
    return int(env_number("LAMP_LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1))


def login_lock_minutes() -> float:
    """How far back failed logins count, so how long a lock lasts after the last one (LAMP_LOGIN_LOCK_MINUTES)."""
    return env_number("LAMP_LOGIN_LOCK_MINUTES", 15, minimum=0.01)


def env_flag(name: str) -> bool:
    """A yes/no variable: 1, true, yes or on; unset, empty, 0, false, no or off is no."""
    text = os.environ.get(name, "").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise SettingError(f"{name}: {text!r} is not yes or no; set 1 or 0, or unset it")


def host_name() -> str:
    """This host's name as recorded with the files kept on its disk (LAMP_HOST, else the machine's hostname).

    A container's hostname is a random id; LAMP_HOST gives the name an operator would look for.
    """
    return os.environ.get("LAMP_HOST", "").strip() or socket.gethostname()


def os_user() -> str:
    """Who runs this process: the submitter recorded for runs queued from the command line or a loopback
    dashboard."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return f"uid {os.getuid()}"
