"""Run files and uploaded datasets in the store, so hosts that share no disk can read each other's results.

Bytes live once per content in `blobs`, named by their SHA-256: a run's files reference them (`run_files`), and
so do uploads; a retry copies its parent's references, not its bytes. A file above the size limit
(LAMP_MAX_STORED_FILE_MB) stays on the disk of the worker that wrote it, with that host and path recorded.
Every read checks the bytes against the recorded SHA-256: a corrupted file is one line naming the run and the
file, and the run's other files still load. A worker's run folder is only a cache of what is stored here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sqlalchemy import Text, cast, delete, exists, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from lamp_common.errors import LampError
from store.db import session_scope, unreachable
from store.models import Blob, Run, RunFile, Upload, utcnow
from store.settings import MB, host_name, stored_file_limit

UPLOAD_PREFIX = "upload:"
UPLOAD_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
UPLOAD_REFERENCE = re.compile(r"upload:(?P<sha256>[0-9a-f]{64})(?P<suffix>\.csv|\.tsv|\.jsonl|\.json)")
CHUNK = MB
PARTIAL = ".part-"  # in the name of a file being written, until it is renamed into place


class RunFileError(LampError):
    """A run file that cannot be read here: not stored, corrupted, or kept on another host's disk."""


@dataclass(frozen=True)
class StoredFile:
    """Where one run file's bytes are: in the store, or on the disk of `host` at `path`."""

    name: str
    size: int
    sha256: str
    in_store: bool
    host: str | None = None
    path: str | None = None

    @property
    def top(self) -> str:
        """The entry of the run folder it belongs to: itself, or its top folder ("peft" for "peft/x.json")."""
        return PurePosixPath(self.name).parts[0]

    def where(self, run_id: int) -> str:
        """One line saying where a file kept on a host's disk lies, for a reader on another host."""
        return (f"run {run_id}: {self.name} ({self.size / MB:,.0f} MB, above the store's limit) is kept on host "
                f"{self.host} at {self.path}; copy it from there")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _insert_ignoring_duplicates(session: Session, table, values: dict) -> None:  # type: ignore[no-untyped-def]
    """INSERT ... ON CONFLICT DO NOTHING: content-addressed rows may be written by two processes at once."""
    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    build = dialects.get(session.get_bind().dialect.name)
    if build is None:
        if session.get(table, values["sha256"]) is None:
            session.execute(insert(table), values)
        return
    session.execute(build(table).values(**values).on_conflict_do_nothing())


def _put_blob(session: Session, sha256: str, content: bytes) -> None:
    _insert_ignoring_duplicates(session, Blob, {"sha256": sha256, "size": len(content), "content": content,
                                                "created_at": utcnow()})


def _replace_row(session: Session, run_id: int, name: str, **values: object) -> str | None:
    """Record (run, name) anew; returns the blob the old row referenced, if any (the caller may free it)."""
    old = session.scalar(select(RunFile.blob).where(RunFile.run_id == run_id, RunFile.name == name))
    session.execute(delete(RunFile).where(RunFile.run_id == run_id, RunFile.name == name))
    session.add(RunFile(run_id=run_id, name=name, created_at=utcnow(), **values))
    return old


def forget_unused_blob(sha256: str | None) -> None:
    """Delete a blob nothing references any more (an older checkpoint). Best effort, in its own transaction: a
    concurrent reference keeps it (the foreign key refuses the delete), a store that is away now (a restart) leaves
    it, and an orphan left behind is harmless; so a run never fails here."""
    if not sha256:
        return
    try:
        with session_scope() as session:
            session.execute(delete(Blob).where(
                Blob.sha256 == sha256,
                ~exists().where(RunFile.blob == sha256),
                ~exists().where(Upload.sha256 == sha256)))
    except DBAPIError as exc:
        if not isinstance(exc, IntegrityError) and not unreachable(exc):
            raise


def store_run_file(session: Session, run_id: int, name: str, path: Path) -> str | None:
    """Store one file of a run under `name` (its path inside the run folder), replacing an earlier version.

    Small files go into the store; a file above the limit is recorded with this host and its path, and must stay
    there. Returns the blob the earlier version referenced, for `forget_unused_blob` once committed.
    """
    size = path.stat().st_size
    if size > stored_file_limit():
        return _replace_row(session, run_id, name, size=size, sha256=sha256_of(path), blob=None,
                            host=host_name(), path=str(path.resolve()))
    content = path.read_bytes()
    sha256 = hashlib.sha256(content).hexdigest()
    _put_blob(session, sha256, content)
    old = _replace_row(session, run_id, name, size=size, sha256=sha256, blob=sha256, host=None, path=None)
    return old if old != sha256 else None


def _partial(path: Path) -> bool:
    """A file `_write_atomically` had not finished (its writer died): never part of a run."""
    return path.name.startswith(".") and PARTIAL in path.name


def folder_files(folder: Path) -> list[tuple[str, Path]]:
    """(name inside the folder, path) of every file under it, folders walked recursively, in a stable order."""
    return [(path.relative_to(folder).as_posix(), path) for path in sorted(folder.rglob("*"))
            if path.is_file() and not _partial(path)]


def store_run_folder(run_id: int, folder: Path) -> list[str]:
    """Store every file of a run folder, one transaction per file (so memory holds one file at a time).
    Returns the names stored."""
    names = []
    for name, path in folder_files(folder):
        with session_scope() as session:
            old = store_run_file(session, run_id, name, path)
        forget_unused_blob(old)
        names.append(name)
    return names


def copy_run_file(session: Session, source_run: int, target_run: int, name: str) -> bool:
    """Give `target_run` the same file as `source_run` (a reference to the same bytes); False if it has none."""
    row = session.scalar(select(RunFile).where(RunFile.run_id == source_run, RunFile.name == name))
    if row is None:
        return False
    _replace_row(session, target_run, name, size=row.size, sha256=row.sha256, blob=row.blob, host=row.host,
                 path=row.path)
    return True


def stored_files(session: Session, run_id: int) -> list[StoredFile]:
    """Every file recorded for a run (without their bytes), by name."""
    rows = session.execute(select(RunFile).where(RunFile.run_id == run_id).order_by(RunFile.name)).scalars()
    return [StoredFile(r.name, r.size, r.sha256, r.blob is not None, r.host, r.path) for r in rows]


def _checked(run_id: int, name: str, content: bytes, sha256: str) -> bytes:
    if hashlib.sha256(content).hexdigest() != sha256:
        raise RunFileError(f"run {run_id}: {name} is corrupted (its bytes do not match the SHA-256 recorded when "
                           "it was written); retry the run to write it again")
    return content


def _from_disk(run_id: int, file: StoredFile) -> bytes:
    """A file kept on a worker's disk: readable only on that host, and only while it is still there."""
    if file.host != host_name() or not file.path or not Path(file.path).is_file():
        raise RunFileError(file.where(run_id))
    return _checked(run_id, file.name, Path(file.path).read_bytes(), file.sha256)


def read_run_file(session: Session, run_id: int, name: str) -> bytes:
    """The checked bytes of one run file, in one query; RunFileError saying why not."""
    row = session.execute(select(RunFile, Blob.content).outerjoin(Blob, Blob.sha256 == RunFile.blob)
                          .where(RunFile.run_id == run_id, RunFile.name == name)).first()
    if row is None:
        raise RunFileError(f"run {run_id}: {name} was not stored (the run has not ended, or wrote no such file)")
    file, content = row
    if file.blob is None:
        return _from_disk(run_id, StoredFile(file.name, file.size, file.sha256, False, file.host, file.path))
    if content is None:
        raise RunFileError(f"run {run_id}: {name} lost its content in the store; retry the run to write it again")
    return _checked(run_id, name, content, file.sha256)


def read_run_folder(session: Session, run_id: int, folder: str) -> dict[str, bytes]:
    """The checked bytes of every file under one folder of a run ("peft"), by name; RunFileError for the first
    file that cannot be read."""
    names = [f.name for f in stored_files(session, run_id) if f.top == folder and f.name != folder]
    return {name: read_run_file(session, run_id, name) for name in names}


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")
    partial.write_bytes(content)
    partial.replace(path)


def _fresh(path: Path, file: StoredFile) -> bool:
    return path.is_file() and path.stat().st_size == file.size and sha256_of(path) == file.sha256


def materialise_run(run_id: int, folder: Path, names: Iterable[str] | None = None,
                    skip: Iterable[str] = ()) -> list[str]:
    """Write a run's stored files (all but `skip`, or those named or under the folders named) into `folder`, a
    local cache: files already there with the right checksum are kept. Returns one line per file that could not
    be written here (kept on another host, or corrupted); the others are written all the same."""
    wanted, skipped = (set(names) if names is not None else None), set(skip)
    with session_scope() as session:
        files = [f for f in stored_files(session, run_id)
                 if (wanted is None or {f.name, f.top} & wanted) and not {f.name, f.top} & skipped]
    problems = []
    for file in files:
        try:
            target = inside(folder, file.name, f"run {run_id}")
            if not _fresh(target, file):
                _copy_into(run_id, file, target)
        except RunFileError as exc:
            problems.append(str(exc))
    return problems


def inside(folder: Path, name: str, owner: str) -> Path:
    """`folder / name`, refused in one line unless it stays inside `folder`: a stored name comes from the store,
    and whoever can write the store must not make a worker write anywhere else."""
    target = folder / name
    if not target.resolve().is_relative_to(folder.resolve()):
        raise RunFileError(f"{owner}: refused the stored file name {name!r}, which leads outside its folder; "
                           "delete the run")
    return target


def _copy_into(run_id: int, file: StoredFile, target: Path) -> None:
    """One stored file into a local path: from the store, or copied on disk when this host keeps it."""
    if file.in_store:
        with session_scope() as session:
            _write_atomically(target, read_run_file(session, run_id, file.name))
        return
    source = Path(file.path or "")
    if file.host != host_name() or not source.is_file():
        raise RunFileError(file.where(run_id))
    if sha256_of(source) != file.sha256:
        raise RunFileError(f"run {run_id}: {file.name} at {source} was changed after it was written; retry the "
                           "run to write it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


# --- uploads ---------------------------------------------------------------------------------------------------

def upload_suffix(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise LampError(f"train_file: {name} is not a {', '.join(UPLOAD_SUFFIXES)} file; upload a CSV or JSONL file")
    return suffix


def store_upload(session: Session, content: bytes, name: str, uploaded_by: str | None = None) -> str:
    """Store a dataset once by content; returns the reference a run's config names it by ("upload:<sha>.csv")."""
    suffix = upload_suffix(name)
    sha256 = hashlib.sha256(content).hexdigest()
    _put_blob(session, sha256, content)
    _insert_ignoring_duplicates(session, Upload, {"sha256": sha256, "name": PurePosixPath(name).name,
                                                  "size": len(content), "uploaded_by": uploaded_by,
                                                  "created_at": utcnow()})
    return f"{UPLOAD_PREFIX}{sha256}{suffix}"


def uploads_named(config: dict) -> set[str]:
    """The SHA-256 of each well-formed upload a stored run config names (its train and eval files)."""
    data = config.get("data") or {}
    found = (UPLOAD_REFERENCE.fullmatch(str(data.get(name) or "")) for name in ("train_file", "eval_file"))
    return {match["sha256"] for match in found if match}


def forget_unused_upload(sha256: str) -> None:
    """Delete an upload that no run still names (deleted runs aside), then its bytes unless a run file shares
    them; called when a run is deleted, so datasets go with the last run that trained on them."""
    with session_scope() as session:
        named = session.scalar(select(exists().where(Run.deleted_at.is_(None),
                                                     cast(Run.config, Text).contains(sha256))))
        if not named:
            session.execute(delete(Upload).where(Upload.sha256 == sha256))
    forget_unused_blob(sha256)


def is_upload(reference: str | None) -> bool:
    return bool(reference) and reference.startswith(UPLOAD_PREFIX)


def upload_parts(reference: str) -> tuple[str, str]:
    """(SHA-256, suffix) of an upload reference, refused in one line unless it is exactly upload:<sha256><suffix>,
    as a reference becomes a path on the worker that reads it."""
    match = UPLOAD_REFERENCE.fullmatch(reference)
    if match is None:
        raise LampError(f"train_file: {reference[:100]!r} is not an upload reference (upload:<64 hex digits> and "
                        f"one of {', '.join(UPLOAD_SUFFIXES)}); upload the file again")
    return match["sha256"], match["suffix"]


def fetch_upload(session: Session, reference: str, cache: Path) -> Path:
    """The uploaded file as a local path under `cache` (written once, checked against its SHA-256)."""
    sha256, suffix = upload_parts(reference)
    path = cache / f"{sha256}{suffix}"
    if path.is_file() and sha256_of(path) == sha256:
        return path
    content = session.scalar(select(Blob.content).where(Blob.sha256 == sha256))
    if content is None:
        raise LampError(f"train_file: the uploaded file {reference} is not in the store; upload it again")
    if hashlib.sha256(content).hexdigest() != sha256:
        raise LampError(f"train_file: the uploaded file {reference} is corrupted in the store; upload it again")
    _write_atomically(path, content)
    return path
