"""The exception hierarchy of pacsnode.

Every error the node raises on purpose derives from :class:`PacsnodeError`, so the
network and CLI boundaries can map them to DIMSE statuses and exit codes in one place.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ConfigError",
    "ExportError",
    "ImageReadError",
    "JobStateError",
    "ModelError",
    "PacsnodeError",
    "ReadFailure",
    "SchemaError",
]


class PacsnodeError(Exception):
    """Root of all errors raised deliberately by pacsnode."""


class ReadFailure(enum.Enum):
    """Why a film could not be turned into pixels."""

    NOT_DICOM = "not_dicom"
    NO_PIXEL_DATA = "no_pixel_data"
    MULTI_FRAME = "multi_frame"
    COLOUR = "colour"
    UNSUPPORTED_PHOTOMETRIC = "unsupported_photometric"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    TRUNCATED_PIXEL_DATA = "truncated_pixel_data"
    ABSURD_DIMENSIONS = "absurd_dimensions"
    CORRUPT_PIXEL_DATA = "corrupt_pixel_data"


class ImageReadError(PacsnodeError):
    """A DICOM object cannot be read as a single greyscale film.

    Parameters
    ----------
    reason
        The machine-readable cause; the boundary maps it to a DIMSE status.
    message
        A sentence a PACS administrator can act on.
    """

    def __init__(self, reason: ReadFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.reason.value}]"


class ModelError(PacsnodeError):
    """Model weights that are missing, altered, or do not fit the network they are meant for."""


class ConfigError(PacsnodeError):
    """The node's configuration cannot be used; every mistake found is listed at once.

    Parameters
    ----------
    problems
        One ``section.key: problem`` line per mistake, in the order found.
    source
        The configuration file read, or None when only the defaults and the
        environment were.
    """

    def __init__(self, problems: Sequence[str], source: Path | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source is not None else ""
        count = len(self.problems)
        noun = "mistake" if count == 1 else "mistakes"
        lines = "".join(f"\n  {problem}" for problem in self.problems)
        super().__init__(f"{count} configuration {noun}{where}:{lines}")


class JobStateError(PacsnodeError):
    """A job or delivery is missing, or not in a state the requested change allows.

    A worker sees this when its lease was lost to another worker; an administrator
    when, say, retrying a job that is still running.
    """


class ExportError(PacsnodeError):
    """A result object (SEG, SR) cannot be built from what the analysis gave, e.g. no spine
    was found on the film, or the film lacks an attribute every derived object must copy."""


class SchemaError(PacsnodeError):
    """The database's schema is not the one this code needs: a revision this code does not
    know (a newer pacsnode migrated it), or an older one while migrations are turned off."""
