"""Files that survive a power cut whole: written beside their final name, flushed to disk, renamed over it, and the
rename itself flushed (the directory's fsync), so a reader after any crash finds the old file or the new one.

A rename alone is not enough: without the data's fsync some filesystems (XFS, ext4 without ``auto_da_alloc``) can
commit the rename before the data and leave an empty file after a power cut.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _staged(path: Path, mode: int) -> Iterator[tuple[Path, BinaryIO]]:
    """A hidden file beside ``path`` (created with ``mode``) to write into; flushed to disk when the block ends, and
    removed if it is still there then (the caller has renamed or linked it into place, or failed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    staged = Path(name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield staged, handle
    finally:
        staged.unlink(missing_ok=True)


def _flush(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _bytes(data: bytes | str) -> bytes:
    return data.encode() if isinstance(data, str) else data


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` (created with ``mode``): whole or not at all, even across a power cut."""
    path = Path(path)
    with _staged(path, mode) as (staged, handle):
        handle.write(_bytes(data))
        _flush(handle)
        os.replace(staged, path)
    fsync_dir(path.parent)
    return path


def copy_atomic(source: Path, path: Path, mode: int = 0o644) -> Path:
    """Copy ``source`` to ``path`` the same way (for files too large to hold in memory)."""
    path = Path(path)
    with _staged(path, mode) as (staged, handle), Path(source).open("rb") as src:
        shutil.copyfileobj(src, handle, 1 << 20)
        _flush(handle)
        os.replace(staged, path)
    fsync_dir(path.parent)
    return path


def create_exclusive(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Create ``path`` with ``data`` only if it does not exist (``FileExistsError`` otherwise), whole or not at all:
    a key made once must never be left empty by a crash, nor overwritten by a second writer."""
    path = Path(path)
    with _staged(path, mode) as (staged, handle):
        handle.write(_bytes(data))
        _flush(handle)
        os.link(staged, path)  # atomic, and refuses an existing name (unlike a rename)
    fsync_dir(path.parent)
    return path


def staging_path(path: Path) -> Path:
    """A new hidden file beside ``path`` for a library to write into, then :func:`commit_staged` (a crash leaves it
    under a name no reader takes for ``path``)."""
    fd, staged = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".part", dir=Path(path).parent)
    os.close(fd)
    return Path(staged)


def commit_staged(staged: Path, path: Path) -> Path:
    """Flush a file another library wrote at ``staged`` (beside ``path``), then rename it over ``path``."""
    with Path(staged).open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(staged, path)
    fsync_dir(Path(path).parent)
    return Path(path)
