"""The C-STORE answers the listener gives, and the one place errors become them.

Status values from PS3.4 Annex B.2.3 and PS3.7 Annex C; an ErrorComment (LO, at most 64
characters) tells the sender's operator what to do.
"""

from __future__ import annotations

import enum
from typing import Final

from pydicom.dataset import Dataset

from pacsnode.errors import ImageReadError, PacsnodeError, ReadFailure

__all__ = ["Refusal", "StoreStatus", "answer", "refusal_for_read_error"]

_ERROR_COMMENT_CHARS: Final = 64


class StoreStatus(enum.IntEnum):
    """C-STORE response statuses the node sends."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    """The node failed for a reason of its own (its database is unavailable...)."""
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORISED = 0x0124
    """The configured filter refuses this kind of film."""
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class Refusal(PacsnodeError):
    """An instance the listener will not keep, with the status that says why.

    Parameters
    ----------
    status
        The failure status to answer.
    comment
        For the sender's operator and the audit log; cut to 64 characters on the wire.
    """

    def __init__(self, status: StoreStatus, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


# What a film the reader cannot use is told: A900 when the object is not the film its
# SOP class promises (no pixels, several frames, colour), C000 when it cannot be parsed.
_READ_STATUS: Final = {
    ReadFailure.NOT_DICOM: StoreStatus.CANNOT_UNDERSTAND,
    ReadFailure.NO_PIXEL_DATA: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReadFailure.MULTI_FRAME: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReadFailure.COLOUR: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReadFailure.UNSUPPORTED_PHOTOMETRIC: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX: StoreStatus.CANNOT_UNDERSTAND,
    ReadFailure.TRUNCATED_PIXEL_DATA: StoreStatus.CANNOT_UNDERSTAND,
    ReadFailure.ABSURD_DIMENSIONS: StoreStatus.CANNOT_UNDERSTAND,
    ReadFailure.CORRUPT_PIXEL_DATA: StoreStatus.CANNOT_UNDERSTAND,
}

_READ_COMMENT: Final = {
    ReadFailure.NOT_DICOM: "Not a DICOM dataset",
    ReadFailure.NO_PIXEL_DATA: "No Pixel Data: not a film",
    ReadFailure.MULTI_FRAME: "Multi-frame: single-frame films only",
    ReadFailure.COLOUR: "Colour image: greyscale films only",
    ReadFailure.UNSUPPORTED_PHOTOMETRIC: "Photometric Interpretation not supported",
    ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX: "Transfer syntax not supported",
    ReadFailure.TRUNCATED_PIXEL_DATA: "Pixel Data shorter than the header says",
    ReadFailure.ABSURD_DIMENSIONS: "Rows/Columns out of range for a film",
    ReadFailure.CORRUPT_PIXEL_DATA: "Pixel Data cannot be decoded",
}


def refusal_for_read_error(error: ImageReadError) -> Refusal:
    """The refusal of a film the shared reader rejected."""
    return Refusal(_READ_STATUS[error.reason], f"{_READ_COMMENT[error.reason]}: {error.args[0]}")


def answer(status: StoreStatus, comment: str | None = None) -> Dataset:
    """The C-STORE response fields pynetdicom sends: Status, and ErrorComment on failure."""
    response = Dataset()
    response.Status = int(status)
    if comment and status is not StoreStatus.SUCCESS:
        # LO: no backslash or control characters, 64 at most.
        clean = "".join(c if " " <= c < "\x7f" and c != "\\" else " " for c in comment)
        response.ErrorComment = clean[:_ERROR_COMMENT_CHARS].rstrip()
    return response
