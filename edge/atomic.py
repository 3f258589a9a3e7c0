"""Files that survive a power cut whole: written beside their final name, flushed to disk, renamed over it, and the
rename itself flushed (the directory's fsync), so a reader after any crash finds the old file or the new one.

A rename alone is not enough: without the data's fsync some filesystems (XFS, ext4 without ``auto_da_alloc``) can
commit the rename before the data and leave an empty file after a power cut.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``data`` (created with ``mode``): whole or not at all, even across a power cut."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def copy_atomic(source: Path, path: Path, mode: int = 0o644) -> Path:
    """Copy ``source`` to ``path`` the same way (for files too large to hold in memory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle, Path(source).open("rb") as src:
            shutil.copyfileobj(src, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
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


def create_exclusive(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Create ``path`` with ``data`` only if it does not exist (``FileExistsError`` otherwise), whole or not at all:
    a key made once must never be left empty by a crash, nor overwritten by a second writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(staged, path)  # atomic, and refuses an existing name (unlike a rename)
    finally:
        Path(staged).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path
