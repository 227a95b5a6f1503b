"""Write a file so that it survives a crash or power cut once the call returns.

The node answers a C-STORE with success, and marks a result ready to send, only after
this: a temporary name, fsync, an atomic rename, and fsync of the directory.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["move_durably", "write_durably"]


def write_durably(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically and durably, creating its directory.

    A reader sees the old file or the whole new one, never a part; after a crash the
    file is the old one or the whole new one, and no temporary is left visible under
    ``path``'s name (an orphaned ``.tmp`` may remain; its name starts with a dot).

    Raises
    ------
    OSError
        The directory cannot be created, or writing, syncing or renaming failed (a full
        disk raises ``ENOSPC``); the temporary file is removed.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # the original error is the one to raise
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def move_durably(source: Path, path: Path) -> None:
    """Put the file ``source`` at ``path`` atomically and durably, creating its directory.

    The same guarantees as :func:`write_durably` for a file already written elsewhere
    on the same filesystem: its data are synced, then it is renamed over ``path``.

    Raises
    ------
    OSError
        ``source`` is missing, on another filesystem (``EXDEV``), or cannot be synced or
        renamed; ``source`` is then left where it was.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, path)
    _fsync_directory(directory)
    if source.parent != directory:
        _fsync_directory(source.parent)


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
