"""The spool: received instances on disk, one file per SOP Instance UID, until analysed.

Files are named by UID under a two-character fan-out directory, so a re-sent instance
lands on the same path and a directory never holds more than a fraction of the spool.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from pacsnode.durable import move_durably, write_durably
from pacsnode.errors import PacsnodeError
from pacsnode.jobs.owner import pid_exists

__all__ = ["Spool", "SpoolFullError", "is_uid"]

log = logging.getLogger(__name__)

_MIB: Final = 1024 * 1024
INCOMING_SUBDIR: Final = ".incoming"
"""Where data sets are written while they arrive; a dot keeps it apart from the fan-out."""
# PS3.5 §9.1: digits and dots, at most 64; also what makes a UID safe as a file name.
_UID: Final = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: str) -> bool:
    """Whether ``value`` is a well-formed DICOM UID (digits and dots, ≤ 64 characters)."""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


class SpoolFullError(PacsnodeError):
    """The spool's filesystem has less free space than the node must keep."""


class Spool:
    """Received files under ``root``.

    Parameters
    ----------
    root
        The spool directory; created when missing.
    min_free_mb
        Free space (MiB) below which :meth:`store` refuses new files.
    """

    def __init__(self, root: Path, min_free_mb: int) -> None:
        self.root = root
        self.min_free_mb = min_free_mb

    def path_for(self, sop_instance_uid: str) -> Path:
        """Where the instance with this UID is kept."""
        if not is_uid(sop_instance_uid):
            raise ValueError(f"{sop_instance_uid!r} is not a DICOM UID")
        fan = hashlib.sha1(sop_instance_uid.encode("ascii")).hexdigest()[:2]
        return self.root / fan / f"{sop_instance_uid}.dcm"

    def free_mb(self) -> float:
        """Free space on the spool's filesystem, MiB (for an unprivileged process)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free / _MIB

    def check_free(self) -> int:
        """The bytes that may still be written before the spool reaches ``min_free_mb``.

        Raises
        ------
        SpoolFullError
            Free space is already below ``min_free_mb``.
        """
        free = self.free_mb()
        if free < self.min_free_mb:
            raise SpoolFullError(
                f"spool has {free:.0f} MiB free, below the {self.min_free_mb} MiB kept free"
            )
        return int((free - self.min_free_mb) * _MIB)

    @property
    def incoming_dir(self) -> Path:
        """Where data sets are written while they arrive, on the spool's filesystem."""
        return self.root / INCOMING_SUBDIR

    def open_incoming(self) -> tuple[Path, IO[bytes]]:
        """A new file in :attr:`incoming_dir` for a data set that is arriving, and the
        file open for writing, unbuffered.

        Its name starts with this process's id, so that :meth:`clear_incoming` knows
        which files a dead node left behind.
        """
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=".dcm", dir=self.incoming_dir)
        return Path(name), os.fdopen(fd, "wb", buffering=0)

    def adopt(self, sop_instance_uid: str, incoming: Path) -> Path:
        """Keep a file from :attr:`incoming_dir` durably as the instance's; a re-sent UID
        replaces its file.

        Raises
        ------
        SpoolFullError
            The disk filled while syncing.
        OSError
            Any other failure; the incoming file is left for the caller to remove.
        """
        path = self.path_for(sop_instance_uid)
        with _disk_full_as_spool_full("syncing"):
            move_durably(incoming, path)
        return path

    def clear_incoming(self) -> int:
        """Remove the incoming files of node processes that no longer run; how many.

        A node that died mid-transfer leaves a partial data set there.
        """
        removed = 0
        if not self.incoming_dir.is_dir():
            return removed
        for entry in self.incoming_dir.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and pid_exists(int(pid)):
                continue
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
        if removed:
            log.info("removed %d partial data set(s) left in %s", removed, self.incoming_dir)
        return removed

    def store(self, sop_instance_uid: str, data: bytes) -> Path:
        """Keep the file of an instance durably; a re-sent UID replaces its file.

        Raises
        ------
        SpoolFullError
            Free space is below ``min_free_mb``, or the disk filled while writing.
        OSError
            Any other failure to write; nothing is left under the instance's name.
        """
        self.check_free()
        path = self.path_for(sop_instance_uid)
        with _disk_full_as_spool_full("writing"):
            write_durably(path, data)
        return path


@contextlib.contextmanager
def _disk_full_as_spool_full(doing: str) -> Iterator[None]:
    """An ``OSError`` for a full disk or quota becomes :class:`SpoolFullError`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SpoolFullError(f"spool disk full while {doing}: {exc.strerror}") from exc
        raise
