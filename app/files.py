"""Run files for the views: a stored folder's files zipped in memory; a local JSON file (a run that ended before
files moved into the store) parsed once per file version."""

from __future__ import annotations

import io
import json
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=256)
def _read_json(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def read_json(path: Path) -> dict[str, Any] | None:
    """The parsed file, re-read only when it changes; None when it is unreadable (e.g. half written)."""
    try:
        return _read_json(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError):
        return None


def zip_folder(folder: Path) -> bytes:
    """The folder's files as a zip archive (paths relative to the folder, under its own name)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return buffer.getvalue()


def zip_files(folder: str, contents: dict[str, bytes]) -> bytes:
    """Files of one folder of a run (names "peft/x.json", as the store keeps them) as a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(contents):
            archive.writestr(name if name.startswith(f"{folder}/") else f"{folder}/{name}", contents[name])
    return buffer.getvalue()
