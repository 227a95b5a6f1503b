"""The spool: received instances on disk, one file per SOP Instance UID, until analysed.

Files are named by UID under a two-character fan-out directory, so a re-sent instance
lands on the same path and a directory never holds more than a fraction of the spool.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
from pathlib import Path
from typing import Final

from pacsnode.durable import write_durably
from pacsnode.errors import PacsnodeError

__all__ = ["Spool", "SpoolFullError", "is_uid"]

_MIB: Final = 1024 * 1024
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

    def store(self, sop_instance_uid: str, data: bytes) -> Path:
        """Keep the file of an instance durably; a re-sent UID replaces its file.

        Raises
        ------
        SpoolFullError
            Free space is below ``min_free_mb``, or the disk filled while writing.
        OSError
            Any other failure to write; nothing is left under the instance's name.
        """
        free = self.free_mb()
        if free < self.min_free_mb:
            raise SpoolFullError(
                f"spool has {free:.0f} MiB free, below the {self.min_free_mb} MiB kept free"
            )
        path = self.path_for(sop_instance_uid)
        try:
            write_durably(path, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFullError(f"spool disk full while writing: {exc.strerror}") from exc
            raise
        return path
