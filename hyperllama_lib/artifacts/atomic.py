"""Atomic writes: a file or folder is replaced in one rename, so a reader (or a crash) sees the old
content or the new, never half of it.

Temporaries are hidden siblings, `.NAME.XXXXXXXX.tmp` (and `.NAME.old-XXXXXXXX` for a folder being
replaced), so the manifest's hashes never include them and a restarted run can tell them apart.
After a failure the temporary is gone and the old file or folder is still in place.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

_UMASK = os.umask(0o022)
os.umask(_UMASK)
# mkstemp and mkdtemp make private files and folders; finished ones get the usual permissions
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


@contextlib.contextmanager
def replace_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` in one rename, synced to disk before the rename."""
    with replace_file(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | Path, obj: Any) -> None:
    """`obj` as indented JSON with sorted keys (`write_text`)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def replace_dir(dst: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `dst` in one rename."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    os.chmod(tmp, DIR_MODE)
    try:
        yield tmp
        _swap(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, dst: Path) -> None:
    """Rename `new` to `dst`. An existing `dst` is moved aside first, moved back if the rename fails,
    and deleted only once `new` is in place: at every moment one of the two is whole."""
    if not dst.exists():
        os.replace(new, dst)
        return
    aside = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.old-"))
    os.replace(dst, aside / dst.name)
    try:
        os.replace(new, dst)
    except BaseException:
        os.replace(aside / dst.name, dst)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)
