"""Turn a DICOM radiograph into calibrated, display-ready pixels, the way a viewer shows it.

The node and the training code share this one reader, so a film looks the same to both.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import io
import logging
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pydicom
from pydicom import datadict
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000TransferSyntaxes,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLELossless,
)

from pacsnode.errors import ImageReadError, ReadFailure

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "MIN_SIDE",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Film",
    "FilmHeader",
    "FilmSource",
    "PixelSpacing",
    "SpacingBasis",
    "film_from_dataset",
    "inspect_film",
    "read_film",
]

_LOG = logging.getLogger(__name__)

SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
)
"""Transfer syntaxes whose pixel data the reader decodes; the listener offers exactly these."""

DEFAULT_MAX_SIDE = 16384
"""Largest Rows or Columns accepted unless the caller says otherwise."""

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
"""Largest Rows × Columns accepted unless the caller says otherwise."""

MIN_SIDE = 16
"""Smallest Rows or Columns accepted: anything smaller is not a radiograph."""

FilmSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Dataset
"""What the readers accept: a path, a DICOM file's bytes or an open binary file (read from
its start), or a dataset already read."""

_PIXEL_DATA = 0x7FE00010
_FLOAT_PIXEL_DATA = {0x7FE00008: "Float Pixel Data", 0x7FE00009: "Double Float Pixel Data"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM_TAG = b"\xfe\xff\x00\xe0"
_GREYSCALE = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = frozenset(
    {
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "PALETTE COLOR",
        "XYB",
        "ARGB",
        "CMYK",
        "HSV",
    }
)
# Header-only reads leave values longer than this unread, so pixel data never loads.
_HEADER_DEFER_SIZE = 64 * 1024
# Robust display range when a film carries no VOI: percentiles of the modality values.
_ROBUST_PERCENTILES = (0.5, 99.5)

# The warnings raised by the read running in this context (thread), or None outside a
# read. warnings.catch_warnings swaps process-wide state and is not thread-safe, so reads
# in several threads would have to take turns; a collector per context lets them overlap.
_CAUGHT: contextvars.ContextVar[list[warnings.WarningMessage] | None] = contextvars.ContextVar(
    "pacsnode_read_warnings", default=None
)


class SpacingBasis(enum.Enum):
    """Where a film's pixel spacing was measured (PS3.3 §10.7)."""

    CALIBRATED = "calibrated"
    """Pixel Spacing (0028,0030) that differs from the detector's: in the patient."""

    MAGNIFICATION_CORRECTED = "magnification-corrected"
    """Imager Pixel Spacing divided by Estimated Radiographic Magnification Factor."""

    DETECTOR = "detector"
    """Imager Pixel Spacing (0018,1164) alone: at the detector, magnified by the beam."""

    NONE = "none"
    """No usable spacing: measurements are in pixels."""


@dataclass(frozen=True)
class PixelSpacing:
    """Physical size of a pixel and where it holds.

    Attributes
    ----------
    row_mm
        Distance between the centres of adjacent rows (vertical spacing) in mm, the
        first value of DICOM's pixel spacing attributes; None when the basis is NONE.
    col_mm
        Distance between the centres of adjacent columns (horizontal spacing) in mm;
        None when the basis is NONE.
    basis
        Which attribute the spacing came from and so in which plane it holds.
    magnification_factor
        The Estimated Radiographic Magnification Factor divided out, for the
        MAGNIFICATION_CORRECTED basis only.
    """

    row_mm: float | None
    col_mm: float | None
    basis: SpacingBasis
    magnification_factor: float | None = None

    @property
    def unit(self) -> str:
        """``"mm"`` when the spacing is known, otherwise ``"px"``."""
        return "px" if self.basis is SpacingBasis.NONE else "mm"

    @property
    def description(self) -> str:
        """How the spacing was obtained, worded for reports."""
        if self.basis is SpacingBasis.CALIBRATED:
            return "calibrated (PixelSpacing, in the patient)"
        if self.basis is SpacingBasis.MAGNIFICATION_CORRECTED:
            return (
                "magnification-corrected (ImagerPixelSpacing / "
                f"EstimatedRadiographicMagnificationFactor {self.magnification_factor:.2f})"
            )
        if self.basis is SpacingBasis.DETECTOR:
            return "detector (ImagerPixelSpacing, not corrected for magnification)"
        return "none (no usable pixel spacing; measurements are in pixels)"


@dataclass(frozen=True)
class FilmHeader:
    """What the header says about a film, checked to be readable.

    Attributes
    ----------
    sop_instance_uid, sop_class_uid, study_instance_uid, series_instance_uid, modality
        As in the header; an empty string when absent (they are Type 1 in every image
        IOD, so absence means a malformed object that the caller may refuse).
    body_part_examined, view_position
        As in the header; None when absent or empty.
    patient_orientation
        Patient Orientation (0020,0020): the patient directions of the row (left to
        right) and then the column (top to bottom), e.g. ``("P", "F")``; None when
        absent or empty.
    photometric_interpretation
        The original value, ``"MONOCHROME1"`` or ``"MONOCHROME2"``; the image is
        already inverted where needed.
    transfer_syntax_uid
        The syntax the pixel data were encoded in.
    rows, columns
        Image size in pixels.
    bits_stored
        Bits Stored (0028,0101) of the encoded data.
    spacing
        Pixel spacing and the plane it holds in.
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    body_part_examined: str | None
    view_position: str | None
    patient_orientation: tuple[str, ...] | None
    photometric_interpretation: str
    transfer_syntax_uid: str
    rows: int
    columns: int
    bits_stored: int
    spacing: PixelSpacing


@dataclass(frozen=True, eq=False)
class Film(FilmHeader):
    """A film's header together with its display-ready image.

    Attributes
    ----------
    image
        The image as a viewer would show it, shape ``(rows, columns)``, float32 in
        [0, 1], 1 the brightest: Modality LUT, then VOI LUT or window (or a robust
        0.5–99.5 percentile range when the film has none), then inversion of
        MONOCHROME1 and of an INVERSE Presentation LUT Shape, so bone is bright.
        Index it ``image[row, col]``. Films compare by identity.
    """

    image: np.ndarray

    # Arrays have no single truth value, and equal headers do not make equal films.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


@dataclass(frozen=True)
class _Parsed:
    ds: Dataset
    # Bytes in the stream the dataset was read from, to check declared lengths of
    # values left unread; None when unknown or not comparable (deflated data).
    stream_size: int | None = None


@dataclass(frozen=True)
class _Layout:
    transfer_syntax: UID
    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str


def check_dimensions(
    rows: int, columns: int, described: str, max_side: int, max_pixels: int
) -> None:
    """Refuse an image whose size is absurd, before any pixel is decoded: ``described``
    opens the message ("Rows × Columns … are 1 × 2; films"), the limits close it."""
    if (
        not MIN_SIDE <= rows <= max_side
        or not MIN_SIDE <= columns <= max_side
        or rows * columns > max_pixels
    ):
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS,
            f"{described} of {MIN_SIDE} to {max_side} pixels a side and at most "
            f"{max_pixels:,} pixels are read",
        )


def read_film(
    source: FilmSource,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Film:
    """Read a single-frame greyscale film and render it as a viewer would.

    Parameters
    ----------
    source
        A path, the bytes of a DICOM file (with or without the 128-byte preamble, as
        pynetdicom's ``encoded_dataset()`` gives them), an open binary file (read from
        its start; unlike a path, its name is not quoted in errors), or a dataset
        already read.
    max_side
        Largest Rows or Columns accepted, in pixels.
    max_pixels
        Largest Rows × Columns accepted, checked before any pixel is decoded.

    Returns
    -------
    Film
        The header, the spacing and the display image.

    Raises
    ------
    ImageReadError
        When the object is not DICOM or not a film this reader can decode; its
        ``reason`` says why and its message names the offending value.
    OSError
        When a path cannot be opened: a fault of the caller's storage, not the film.
    """
    with captured_warnings() as caught:
        parsed = _parse(source, caught, header_only=False)
        film = _film(parsed, max_side=max_side, max_pixels=max_pixels)
        _log_read(film, caught, "read")
    return film


def inspect_film(
    source: FilmSource,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    decode_compressed: bool = False,
) -> FilmHeader:
    """Check that a film is readable from its header alone, without decoding pixels.

    Runs every check :func:`read_film` runs before decoding, including that native
    pixel data are long enough, and its Modality LUT or rescale on one value. Values
    longer than 64 KiB (the pixel data) are not loaded from a path. A film that passes
    can still fail to decode when its compressed data are damaged, unless
    ``decode_compressed`` is given.

    Parameters
    ----------
    source
        As for :func:`read_film`.
    max_side
        Largest Rows or Columns accepted, in pixels.
    max_pixels
        Largest Rows × Columns accepted.
    decode_compressed
        Decode compressed pixel data too (without rendering them), so that a damaged
        codestream is refused here: the whole file is read into memory, and the frame
        decoded. Uncompressed data need no decoding to be checked.

    Returns
    -------
    FilmHeader
        The header fields and spacing a :class:`Film` would carry.

    Raises
    ------
    ImageReadError
        As for :func:`read_film`, except that damage inside compressed pixel data is
        not seen.
    OSError
        When a path cannot be opened.
    """
    with captured_warnings() as caught:
        parsed = _parse(source, caught, header_only=True)
        layout = _check(parsed, max_side=max_side, max_pixels=max_pixels)
        # The Modality LUT or rescale read_film applies after decoding, tried on one
        # stored value: a film whose slope is not a number is refused here too.
        _modality(np.zeros((1, 1), dtype=np.uint16), parsed.ds)
        if decode_compressed and layout.transfer_syntax.is_encapsulated:
            whole = parsed if isinstance(source, Dataset) else None
            whole = whole or _parse(source, caught, header_only=False)
            _decode(whole.ds, layout)
        header = FilmHeader(**_header_fields(parsed.ds, layout))
        _log_read(header, caught, "inspected")
    return header


def film_from_dataset(
    ds: Dataset,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Film:
    """Render a dataset already in memory; the same as :func:`read_film` on it.

    The dataset is not modified. Without a Transfer Syntax UID in its file meta, the
    encoding it was read with is used (explicit VR little endian for a dataset built
    in memory), and compressed pixel data are refused.

    Parameters
    ----------
    ds
        The dataset, with its pixel data.
    max_side
        Largest Rows or Columns accepted, in pixels.
    max_pixels
        Largest Rows × Columns accepted.

    Returns
    -------
    Film
        The header, the spacing and the display image.

    Raises
    ------
    ImageReadError
        As for :func:`read_film`.
    """
    return read_film(ds, max_side=max_side, max_pixels=max_pixels)


# --- parsing -------------------------------------------------------------------------


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the warnings that reading DICOM raises in this thread instead of emitting
    them; other threads' warnings, and the process's filters, are left alone.

    pydicom warns about malformed values and cut-short streams; for a node these are
    properties of the input, judged by the checks here, not faults of the program. Every
    warning is kept, a repeated one too (no once-per-location registry), so a check that
    looks for one always finds it. Floating-point warnings of numpy are silenced for the
    block (numpy keeps that state per context).
    """
    _route_warnings()
    caught: list[warnings.WarningMessage] = []
    token = _CAUGHT.set(caught)
    try:
        with np.errstate(all="ignore"):
            yield caught
    finally:
        _CAUGHT.reset(token)


def _route_warnings() -> None:
    """Once per process: let ``warnings.warn`` hand a warning to the collector of the
    read running in the calling context, and pass every other one on unchanged.

    pydicom (and its pixel plugins) call ``warnings.warn`` by attribute, so the shim sees
    them; ``catch_warnings`` (pytest's included) never replaces ``warnings.warn``, so it
    stays in place.
    """
    if getattr(warnings.warn, "_pacsnode_router", False):
        return
    original = warnings.warn

    def warn(
        message: Any, category: Any = None, stacklevel: int = 1, source: Any = None, **kw: Any
    ) -> None:
        caught = _CAUGHT.get()
        if caught is None:
            # One frame more than the caller meant: this one.
            original(message, category, stacklevel + 1, source, **kw)
            return
        if isinstance(message, Warning):
            category = type(message)
        caught.append(warnings.WarningMessage(message, category or UserWarning, "", 0, source))

    warn._pacsnode_router = True  # type: ignore[attr-defined]
    warnings.warn = warn


def _log_read(header: FilmHeader, caught: Sequence[warnings.WarningMessage], verb: str) -> None:
    # Counts only: pydicom's messages can quote element values, patient names included.
    _LOG.debug(
        "%s film %s: %d x %d, %s, spacing %s; %d pydicom warning(s) suppressed",
        verb,
        header.sop_instance_uid,
        header.rows,
        header.columns,
        UID(header.transfer_syntax_uid).name,
        header.spacing.basis.value,
        len(caught),
    )


def _parse(
    source: FilmSource, caught: list[warnings.WarningMessage], *, header_only: bool
) -> _Parsed:
    if isinstance(source, Dataset):
        return _Parsed(source)
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        stream = io.BytesIO(data)
        return _parse_stream(stream, len(data), "the DICOM object", caught, header_only)
    if not isinstance(source, str | os.PathLike):
        source.seek(0, os.SEEK_END)
        size = source.tell()
        source.seek(0)
        return _parse_stream(source, size, "the DICOM object", caught, header_only)
    path = Path(source)
    with path.open("rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        return _parse_stream(fp, size, f"file '{path}'", caught, header_only)


def _parse_stream(
    fp: IO[bytes],
    size: int,
    label: str,
    caught: list[warnings.WarningMessage],
    header_only: bool,
) -> _Parsed:
    if size == 0:
        raise ImageReadError(ReadFailure.NOT_DICOM, f"{label} is empty (0 bytes); not DICOM")
    head = fp.read(132)
    fp.seek(0)
    has_prefix = head[128:132] == b"DICM"
    if not has_prefix and not _starts_like_dataset(head):
        raise ImageReadError(
            ReadFailure.NOT_DICOM,
            f"{label} is not DICOM: it has no 'DICM' prefix at byte 128 and does not start "
            "with a DICOM element",
        )
    already = len(caught)
    try:
        ds = pydicom.dcmread(
            fp,
            force=not has_prefix,
            defer_size=_HEADER_DEFER_SIZE if header_only else None,
        )
    except Exception as exc:  # pydicom raises many types for malformed input
        raise ImageReadError(
            ReadFailure.NOT_DICOM,
            f"{label} could not be parsed as DICOM ({type(exc).__name__}: {exc})",
        ) from exc
    # pydicom reports a stream ending inside an undefined-length value (encapsulated
    # pixel data) only as a warning, and then keeps none of the data set.
    cut_short = any("end of file" in str(m.message).lower() for m in caught[already:])
    if cut_short and _PIXEL_DATA not in ds and ds.file_meta.get("TransferSyntaxUID"):
        raise ImageReadError(
            ReadFailure.TRUNCATED_PIXEL_DATA,
            f"{label} ends before its data set is complete: the file or the transfer was "
            "cut short; send it again",
        )
    # Every DICOM object has a SOP Class UID; bytes that merely parse have neither it nor
    # pixel data.
    if "SOPClassUID" not in ds and _PIXEL_DATA not in ds:
        raise ImageReadError(
            ReadFailure.NOT_DICOM,
            f"{label} is not DICOM: it holds neither a SOP Class UID (0008,0016) nor "
            "Pixel Data (7FE0,0010)",
        )
    ts = ds.file_meta.get("TransferSyntaxUID")
    comparable = ts != DeflatedExplicitVRLittleEndian
    return _Parsed(ds, stream_size=size if comparable else None)


def _starts_like_dataset(head: bytes) -> bool:
    """Whether bytes without a preamble begin like a DICOM file meta or data set.

    Such objects start with group 0002 (file meta) or 0008 (identification), little
    endian, followed by either a two-letter VR (explicit VR) or a 4-byte length.
    """
    if len(head) < 8:
        return False
    group, _element = struct.unpack("<HH", head[:4])
    if group not in (0x0002, 0x0008):
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    (length,) = struct.unpack("<I", head[4:8])
    return length < 0x10000


# --- checks before decoding ----------------------------------------------------------


def _check(parsed: _Parsed, *, max_side: int, max_pixels: int) -> _Layout:
    """Refuse, from the header alone, every film the decoder should not be given."""
    ds = parsed.ds
    if _PIXEL_DATA not in ds:
        for tag, name in _FLOAT_PIXEL_DATA.items():
            if tag in ds:
                raise ImageReadError(
                    ReadFailure.NO_PIXEL_DATA,
                    f"the object has {name} ({tag >> 16:04X},{tag & 0xFFFF:04X}) instead of "
                    "integer Pixel Data (7FE0,0010); only integer greyscale films are read",
                )
        sop_class = UID(_text(ds, "SOPClassUID") or "")
        raise ImageReadError(
            ReadFailure.NO_PIXEL_DATA,
            "the object has no Pixel Data (7FE0,0010); it is not an image "
            f"(SOP Class UID '{sop_class}', {sop_class.name or 'absent'})",
        )

    value, length, _offset = _pixel_element(ds)
    if (value is not None and len(value) == 0) or length == 0:
        raise ImageReadError(ReadFailure.NO_PIXEL_DATA, "Pixel Data (7FE0,0010) is empty")

    ts = _transfer_syntax(ds)

    frames = _int_attr(ds, "NumberOfFrames", 1)
    if frames > 1:
        raise ImageReadError(
            ReadFailure.MULTI_FRAME,
            f"Number of Frames (0028,0008) is {frames}; only single-frame films are read",
        )

    samples = _int_attr(ds, "SamplesPerPixel", 1)
    if samples < 1:
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS,
            f"Samples per Pixel (0028,0002) is {samples}; it must be 1 for a greyscale film",
        )
    photometric = (_text(ds, "PhotometricInterpretation") or "").upper()
    if samples != 1 or photometric in _COLOUR:
        # Grey pictures exported as RGB are refused too: only their decoded pixels could
        # show that the channels are equal, and the listener decides from the header.
        raise ImageReadError(
            ReadFailure.COLOUR,
            f"the image is not greyscale: Photometric Interpretation (0028,0004) is "
            f"'{photometric}' with Samples per Pixel (0028,0002) {samples}; only "
            "MONOCHROME1 and MONOCHROME2 films are read, also when the colour channels "
            "are equal (store a grey picture as MONOCHROME2, or give its PNG or JPEG to "
            "pacsnode analyze)",
        )
    if photometric not in _GREYSCALE:
        shown = f"'{photometric}'" if photometric else "absent"
        raise ImageReadError(
            ReadFailure.UNSUPPORTED_PHOTOMETRIC,
            f"Photometric Interpretation (0028,0004) is {shown}; only MONOCHROME1 and "
            "MONOCHROME2 films are read",
        )

    rows = _int_attr(ds, "Rows", None)
    columns = _int_attr(ds, "Columns", None)
    check_dimensions(
        rows,
        columns,
        f"Rows × Columns (0028,0010/0011) are {rows} × {columns}; films",
        max_side,
        max_pixels,
    )

    bits_allocated = _int_attr(ds, "BitsAllocated", None)
    bits_stored = _int_attr(ds, "BitsStored", None)
    representation = _int_attr(ds, "PixelRepresentation", 0)
    if bits_allocated not in (8, 16):
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS,
            f"Bits Allocated (0028,0100) is {bits_allocated}; only 8 and 16 are read",
        )
    if not 1 <= bits_stored <= bits_allocated:
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS,
            f"Bits Stored (0028,0101) is {bits_stored} with Bits Allocated {bits_allocated}; "
            "it must be between 1 and Bits Allocated",
        )
    if representation not in (0, 1):
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS,
            f"Pixel Representation (0028,0103) is {representation}; it must be 0 or 1",
        )

    layout = _Layout(ts, rows, columns, bits_allocated, bits_stored, representation, photometric)
    if ts.is_encapsulated:
        _check_encapsulated(parsed, layout)
    else:
        _check_native_length(parsed, layout)
    return layout


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    value = meta.get("TransferSyntaxUID") if meta is not None else None
    if value:
        ts = UID(str(value).strip())
    else:
        # No file meta: a bare data set, whose encoding pydicom inferred on reading.
        if _pixel_element_undefined_length(ds):
            raise ImageReadError(
                ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX,
                "the object has no Transfer Syntax UID (0002,0010) and its pixel data are "
                "compressed, so the compression cannot be known",
            )
        implicit, little = ds.original_encoding
        if implicit:
            ts = ImplicitVRLittleEndian
        elif little is False:
            ts = ExplicitVRBigEndian
        else:
            ts = ExplicitVRLittleEndian
    if ts not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ImageReadError(
            ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX,
            f"Transfer Syntax UID (0002,0010) is '{ts}' ({ts.name}); it is not one of the "
            f"{len(SUPPORTED_TRANSFER_SYNTAXES)} syntaxes pacsnode decodes",
        )
    return ts


def _pixel_element(ds: Dataset) -> tuple[bytes | None, int | None, int | None]:
    """The pixel data value (None when left unread), its declared length, and offset."""
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if isinstance(elem, RawDataElement):
        return elem.value, elem.length, elem.value_tell
    value = elem.value
    if value is not None and not isinstance(value, bytes):
        value = bytes(value)
    length = _UNDEFINED_LENGTH if elem.is_undefined_length else None
    return value, length, None


def _pixel_element_undefined_length(ds: Dataset) -> bool:
    _value, length, _offset = _pixel_element(ds)
    return length == _UNDEFINED_LENGTH


def _check_native_length(parsed: _Parsed, layout: _Layout) -> None:
    value, length, offset = _pixel_element(parsed.ds)
    needed = layout.rows * layout.columns * (layout.bits_allocated // 8)
    if value is not None:
        available = len(value)
    else:
        # Left unread by a header-only read: trust the declared length only as far as
        # the stream actually extends.
        available = length or 0
        if parsed.stream_size is not None and offset is not None:
            available = min(available, max(parsed.stream_size - offset, 0))
    if available < needed:
        raise ImageReadError(
            ReadFailure.TRUNCATED_PIXEL_DATA,
            f"Pixel Data (7FE0,0010) holds {available:,} bytes but Rows × Columns × Bits "
            f"Allocated ({layout.rows} × {layout.columns} × {layout.bits_allocated}) need "
            f"{needed:,}: the data were cut short",
        )


def _check_encapsulated(parsed: _Parsed, layout: _Layout) -> None:
    value, _length, _offset = _pixel_element(parsed.ds)
    if value is None:
        return  # left unread by a header-only read; the decoder checks it later
    name = layout.transfer_syntax.name
    if not value.startswith(_ITEM_TAG):
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"Pixel Data (7FE0,0010) is not encapsulated in items although the transfer "
            f"syntax ({name}) is compressed",
        )
    try:
        items = generate_fragments(value)
        next(items)  # the Basic Offset Table
        first = next(items, None)
    except Exception as exc:  # malformed item headers
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"the encapsulated {name} pixel data are malformed ({exc})",
        ) from exc
    if not first:
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"the encapsulated {name} pixel data hold no compressed frame",
        )
    size = _codestream_size(layout.transfer_syntax, first)
    if size is not None and size != (layout.rows, layout.columns):
        # Decoders allocate what the codestream declares: refuse before they do.
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"the {name} codestream is {size[0]} × {size[1]} pixels but Rows × Columns "
            f"are {layout.rows} × {layout.columns}",
        )


def _codestream_size(ts: UID, fragment: bytes) -> tuple[int, int] | None:
    """(rows, columns) declared by a compressed frame's header, or None if not found."""
    if ts in JPEG2000TransferSyntaxes:
        # SOC then SIZ (ISO/IEC 15444-1 A.5.1), possibly after JP2 boxes.
        at = fragment.find(b"\xff\x4f\xff\x51", 0, 4096)
        if at < 0 or len(fragment) < at + 28:
            return None
        xsiz, ysiz, x_offset, y_offset = struct.unpack(">IIII", fragment[at + 8 : at + 24])
        return ysiz - y_offset, xsiz - x_offset
    if ts in JPEGTransferSyntaxes or ts in JPEGLSTransferSyntaxes:
        return _jpeg_frame_size(fragment)
    return None


def _jpeg_frame_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) from the SOFn (ISO/IEC 10918-1) or SOF55 (14495-1) header."""
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return None if height == 0 else (height, width)  # 0: height given by DNL
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return None


# --- decoding and display ------------------------------------------------------------


def _film(parsed: _Parsed, *, max_side: int, max_pixels: int) -> Film:
    if _PIXEL_DATA in parsed.ds:
        # A caller's dataset may have been read with defer_size: load the value now.
        parsed.ds.get_item(_PIXEL_DATA)
    layout = _check(parsed, max_side=max_side, max_pixels=max_pixels)
    stored = _decode(parsed.ds, layout)
    image = _display(stored, parsed.ds, layout)
    return Film(**_header_fields(parsed.ds, layout), image=image)


def _decode(ds: Dataset, layout: _Layout) -> np.ndarray:
    """Stored values, shape (rows, columns), from exactly the layout that was checked."""
    decoder = get_decoder(layout.transfer_syntax)
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise ImageReadError(
            ReadFailure.UNSUPPORTED_TRANSFER_SYNTAX,
            f"no decoder for {layout.transfer_syntax.name} is installed on this node ({missing})",
        )
    # pydicom annotates the options as one TypedDict rather than unpacking it.
    options: dict[str, Any] = {
        "rows": layout.rows,
        "columns": layout.columns,
        "samples_per_pixel": 1,
        "number_of_frames": 1,
        "bits_allocated": layout.bits_allocated,
        "bits_stored": layout.bits_stored,
        "pixel_representation": layout.pixel_representation,
        "photometric_interpretation": layout.photometric,
        "pixel_keyword": "PixelData",
    }
    try:
        stored, _properties = decoder.as_array(ds[_PIXEL_DATA].value, index=0, raw=True, **options)
    except (MemoryError, KeyboardInterrupt, SystemExit):
        raise
    # Every decoder plugin raises its own types, and a Rust one (pylibjpeg-rle) panics on
    # damaged data with a PanicException, which derives from BaseException: caught too,
    # or one crafted film would end the thread that read it (found by tests/fuzz.py).
    except BaseException as exc:
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"the {layout.transfer_syntax.name} pixel data could not be decoded: {exc}",
        ) from exc
    if stored.shape != (layout.rows, layout.columns):
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            f"the {layout.transfer_syntax.name} pixel data decoded to shape {stored.shape}, "
            f"not Rows × Columns {layout.rows} × {layout.columns}",
        )
    return stored


def _display(stored: np.ndarray, ds: Dataset, layout: _Layout) -> np.ndarray:
    """Modality LUT, VOI, then polarity: float32 in [0, 1] with bone bright."""
    values = _modality(stored, ds)
    shown = _voi(values, ds, layout)
    shape = (_text(ds, "PresentationLUTShape") or "").upper()
    if layout.photometric == "MONOCHROME1" or shape == "INVERSE":
        # DX pairs MONOCHROME1 with an INVERSE shape for one inversion, not two.
        shown = 1.0 - shown
    return np.clip(shown, 0.0, 1.0).astype(np.float32)


def _modality(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality values (PS3.3 C.11.1): Modality LUT Sequence, else rescale, as float64."""
    if _get(ds, "ModalityLUTSequence"):
        try:
            return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        except Exception as exc:  # a malformed LUT item; pydicom raises various types
            raise ImageReadError(
                ReadFailure.CORRUPT_PIXEL_DATA,
                f"the Modality LUT Sequence (0028,3000) could not be applied: {exc}",
            ) from exc
    slope = _rescale(ds, "RescaleSlope", 1.0)
    intercept = _rescale(ds, "RescaleIntercept", 0.0)
    if slope == 0:
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA,
            "Rescale Slope (0028,1053) is 0, which would make every pixel the same",
        )
    return stored.astype(np.float64) * slope + intercept


def _rescale(ds: Dataset, keyword: str, default: float) -> float:
    raw = _get(ds, keyword)
    if raw is None or raw == "":
        return default
    numbers = _floats(ds, keyword)
    if numbers is None or len(numbers) != 1:
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA, f"{_named(keyword)} is '{raw}', not a number"
        )
    return numbers[0]


def _voi(values: np.ndarray, ds: Dataset, layout: _Layout) -> np.ndarray:
    """Display values in [0, 1] before polarity: VOI LUT, else window, else robust range.

    A VOI the film carries but that cannot be used (malformed LUT, non-numeric or
    non-positive window) is skipped as a viewer would, falling through to the next.
    """
    if _get(ds, "VOILUTSequence"):
        shown = _voi_lut(values, ds, layout)
        if shown is not None:
            return shown
    shown = _window(values, ds)
    if shown is not None:
        return shown
    return _robust_range(values)


def _voi_lut(values: np.ndarray, ds: Dataset, layout: _Layout) -> np.ndarray | None:
    """The first VOI LUT (PS3.3 C.11.2.1.1), scaled by the LUT's own output range.

    The range of the LUT data is used rather than 2^n - 1 from the descriptor because
    some modalities declare 16-bit entries for a LUT holding 12-bit values. The table
    is looked up here, not by pydicom's ``apply_voi``, which indexes an 8-bit LUT of
    more than 256 entries through an 8-bit array.
    """
    try:
        item = ds.VOILUTSequence[0]
        entries, first, _bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 65536
        data = item["LUTData"].value
        if isinstance(data, bytes):  # OW: 16-bit words in the data set's byte order
            order = "<" if layout.transfer_syntax.is_little_endian else ">"
            table = np.frombuffer(data, dtype=f"{order}u2").astype(np.float64)
        else:  # US: already numbers
            table = np.asarray(list(data) if _is_multi(data) else [data], dtype=np.float64)
    except Exception as exc:  # malformed item; skip it as a viewer would
        _LOG.debug("VOI LUT Sequence unusable, falling back: %s", exc)
        return None
    if table.size < entries or entries < 2:
        _LOG.debug("VOI LUT holds %d entries, descriptor says %d; ignored", table.size, entries)
        return None
    table = table[:entries]
    low, high = float(table.min()), float(table.max())
    if high <= low:
        return None
    # Inputs below the first mapped value take the first entry, above the last the last.
    index = np.clip(np.rint(values) - first, 0, entries - 1).astype(np.intp)
    return (table[index] - low) / (high - low)


def _window(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """The first Window Center/Width (PS3.3 C.11.2.1.2), mapped onto [0, 1]."""
    centres = _floats(ds, "WindowCenter")
    widths = _floats(ds, "WindowWidth")
    if not centres or not widths:
        return None
    centre, width = centres[0], widths[0]
    function = (_text(ds, "VOILUTFunction") or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            return None
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            return None
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if function != "LINEAR":
        _LOG.debug("unknown VOI LUT Function %r, windowing as LINEAR", function)
    if width < 1:
        return None
    if width == 1:  # LINEAR's width - 1 is 0: a step at the centre
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _robust_range(values: np.ndarray) -> np.ndarray:
    low, high = (float(v) for v in np.percentile(values, _ROBUST_PERCENTILES))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


# --- header fields and spacing -------------------------------------------------------


def _header_fields(ds: Dataset, layout: _Layout) -> dict[str, Any]:
    return {
        "sop_instance_uid": _text(ds, "SOPInstanceUID") or "",
        "sop_class_uid": _text(ds, "SOPClassUID") or "",
        "study_instance_uid": _text(ds, "StudyInstanceUID") or "",
        "series_instance_uid": _text(ds, "SeriesInstanceUID") or "",
        "modality": _text(ds, "Modality") or "",
        "body_part_examined": _text(ds, "BodyPartExamined"),
        "view_position": _text(ds, "ViewPosition"),
        "patient_orientation": _orientation(ds),
        "photometric_interpretation": layout.photometric,
        "transfer_syntax_uid": str(layout.transfer_syntax),
        "rows": layout.rows,
        "columns": layout.columns,
        "bits_stored": layout.bits_stored,
        "spacing": _spacing(ds),
    }


def _spacing(ds: Dataset) -> PixelSpacing:
    """Spacing by PS3.3 §10.7: calibrated, else magnification-corrected, else detector.

    Pixel Spacing equal to Imager Pixel Spacing, with no Pixel Spacing Calibration Type,
    is the detector spacing copied over (§10.7.1.1), not a calibration.
    """
    pixel = _positive(ds, "PixelSpacing", 2)
    imager = _positive(ds, "ImagerPixelSpacing", 2)
    calibration_type = _text(ds, "PixelSpacingCalibrationType")
    if pixel and (imager is None or calibration_type or not _same(pixel, imager)):
        return PixelSpacing(pixel[0], pixel[1], SpacingBasis.CALIBRATED)
    if imager:
        factor = _positive(ds, "EstimatedRadiographicMagnificationFactor", 1)
        if factor:
            return PixelSpacing(
                imager[0] / factor[0],
                imager[1] / factor[0],
                SpacingBasis.MAGNIFICATION_CORRECTED,
                magnification_factor=factor[0],
            )
        return PixelSpacing(imager[0], imager[1], SpacingBasis.DETECTOR)
    return PixelSpacing(None, None, SpacingBasis.NONE)


def _same(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b, strict=True))


def _positive(ds: Dataset, keyword: str, count: int) -> tuple[float, ...] | None:
    """``count`` finite positive numbers from a DS attribute, or None if malformed."""
    values = _floats(ds, keyword)
    if values is None or len(values) != count or not all(v > 0 for v in values):
        if _get(ds, keyword) not in (None, ""):
            _LOG.debug("ignoring malformed %s", keyword)
        return None
    return values


def _orientation(ds: Dataset) -> tuple[str, ...] | None:
    value = _get(ds, "PatientOrientation")
    if value in (None, ""):
        return None
    items = list(value) if _is_multi(value) else [value]
    parts = tuple(str(v).strip() for v in items)
    return parts if any(parts) else None


# --- element access that never raises ------------------------------------------------


def _is_multi(value: Any) -> bool:
    """Whether an element value holds several values (pydicom's MultiValue, a list)."""
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # an undecodable value; the caller treats it as absent
        return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = _get(ds, keyword)
    if value is None:
        return None
    if _is_multi(value):
        value = "\\".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _floats(ds: Dataset, keyword: str) -> tuple[float, ...] | None:
    value = _get(ds, keyword)
    if value is None or value == "":
        return None
    items = list(value) if _is_multi(value) else [value]
    try:
        numbers = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None
    return numbers if numbers and all(math.isfinite(n) for n in numbers) else None


def _int_attr(ds: Dataset, keyword: str, default: int | None) -> int:
    """An integer Image Pixel attribute, ``default`` when absent; malformed is refused."""
    value = _get(ds, keyword)
    if _is_multi(value) and len(value) == 1:
        value = value[0]
    if value is None or value == "":
        if default is None:
            raise ImageReadError(
                ReadFailure.ABSURD_DIMENSIONS, f"{_named(keyword)} is absent or empty"
            )
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number.is_integer():
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS, f"{_named(keyword)} is '{value}', not a whole number"
        )
    return int(number)


def _named(keyword: str) -> str:
    """'BitsAllocated' -> 'Bits Allocated (0028,0100)', as PACS administrators see it."""
    tag = datadict.tag_for_keyword(keyword)
    if tag is None:
        return keyword
    return f"{datadict.dictionary_description(tag)} ({tag >> 16:04X},{tag & 0xFFFF:04X})"
