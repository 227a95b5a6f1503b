"""Inflate a received Deflated Explicit VR Little Endian file within a size bound.

pydicom and pynetdicom inflate such a data set with one unbounded ``zlib.decompress``,
so a few hundred kB can become gigabytes in memory (pynetdicom #1086). Here it is
inflated in pieces to a file, and refused once it passes the bound.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import IO, Final

from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian

__all__ = ["InflateError", "TooLargeInflated", "inflate_file"]

_CHUNK: Final = 1024 * 1024
_PREAMBLE: Final = 128 + 4  # preamble and "DICM"
_GROUP_LENGTH_ELEMENT: Final = 12  # (0002,0000) UL, explicit VR


class InflateError(ValueError):
    """The file's meta or its deflated stream is malformed."""


class TooLargeInflated(InflateError):
    """The inflated data set is larger than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the inflated data set is larger than {limit} bytes")
        self.limit = limit


def inflate_file(source: Path, target: IO[bytes], limit: int) -> int:
    """Write ``source``, a DICOM file in Deflated Explicit VR Little Endian, to ``target``
    as the same file in Explicit VR Little Endian; return the data set's inflated bytes.

    Memory stays at about two 1 MiB pieces whatever the file holds.

    Parameters
    ----------
    source
        The deflated file, with preamble and file meta (with its group length, as
        pynetdicom writes it).
    target
        Where the inflated file is written, from its current position.
    limit
        Largest inflated data set accepted, bytes.

    Raises
    ------
    TooLargeInflated
        The data set inflates to more than ``limit`` bytes; ``target`` is incomplete.
    InflateError
        The file meta cannot be read, or the deflated stream is corrupt.
    """
    try:
        meta = read_file_meta_info(source)
        meta_length = int(meta.FileMetaInformationGroupLength)
    except Exception as exc:  # pydicom raises many types for malformed input
        raise InflateError(f"the file meta cannot be read ({type(exc).__name__})") from exc
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    target.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(target, meta)  # type: ignore[arg-type]

    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with source.open("rb") as deflated:
        deflated.seek(_PREAMBLE + _GROUP_LENGTH_ELEMENT + meta_length)
        try:
            while not inflater.eof:
                compressed = inflater.unconsumed_tail or deflated.read(_CHUNK)
                # With the input spent, zlib may still hold output of what it has read.
                piece = inflater.decompress(compressed, _CHUNK)
                if not piece and not compressed:
                    break
                total += len(piece)
                if total > limit:
                    raise TooLargeInflated(limit)
                target.write(piece)
        except zlib.error as exc:
            raise InflateError(f"the deflated data set is corrupt ({exc})") from exc
    if not inflater.eof:
        # The file ends inside the deflated stream: cut short, and the reader (pydicom's
        # one-piece inflate) refuses it too (found by tests/fuzz.py).
        raise InflateError("the deflated data set ends before its stream does")
    return total
