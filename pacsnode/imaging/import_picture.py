"""Wrap a PNG or JPEG picture of a radiograph as a DICOM Secondary Capture film, so that
``pacsnode analyze`` reads it like any film and its SEG and SR have an image to refer to.

Not re-exported by :mod:`pacsnode.imaging`: it builds DICOM with highdicom and pacsnode's
export identity, which the listener, importing the reader, does not need to load.
"""

from __future__ import annotations

import hashlib
import io
from typing import Final

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pacsnode.errors import ImageReadError, ReadFailure
from pacsnode.export.identity import NodeIdentity
from pacsnode.export.uids import import_uids
from pacsnode.imaging.reader import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, check_dimensions

__all__ = [
    "GREY_TOLERANCE",
    "PICTURE_SERIES_NUMBER",
    "picture_format",
    "picture_pixels",
    "wrap_picture",
]

GREY_TOLERANCE: Final = 2
"""Largest difference, in 8-bit levels, between the red, green and blue of one pixel for
an RGB picture to be taken as grey (lossy colour coding of a grey picture rounds each
channel on its own)."""

PICTURE_SERIES_NUMBER: Final = 1
"""Series Number of the wrapping film; the results are 9901 (SEG) and 9902 (SR)."""

_SIGNATURES: Final = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}
# Pillow opens a JPEG that holds several pictures (MPO, from cameras) as "MPO".
_FORMATS: Final = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG"}
_GREY_MODES: Final = {"L": 8, "LA": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I": 16}
_RGB_MODES: Final = frozenset({"RGB", "RGBA", "RGBX", "P", "PA"})
_MODE_NAMES: Final = {
    "1": "black and white (1 bit)",
    "CMYK": "CMYK colour",
    "YCbCr": "YCbCr colour",
    "LAB": "L*a*b* colour",
    "HSV": "HSV colour",
    "F": "floating point",
}
_DESCRIPTION_PREFIX: Final = "pacsnode import of "
_LO_CHARS: Final = 64  # the Long String VR's maximum


def picture_format(data: bytes) -> str | None:
    """``"PNG"`` or ``"JPEG"`` when ``data`` start with that format's signature, else None
    (a DICOM file, or anything else)."""
    if data[128:132] == b"DICM":  # a DICOM file's preamble is free to look like a picture
        return None
    for signature, name in _SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


def picture_pixels(
    data: bytes,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> NDArray[np.uint8] | NDArray[np.uint16]:
    """The grey values of a PNG or JPEG picture, shape (rows, columns), as displayed.

    An 8-bit grey picture gives uint8, a 16-bit one uint16. An RGB or palette picture whose
    red, green and blue agree within :data:`GREY_TOLERANCE` at every pixel is turned to grey
    (their mean); any other is refused as colour. An alpha channel is ignored. The EXIF
    orientation of a picture is applied, as a viewer does.

    Parameters
    ----------
    data
        The picture file's bytes.
    max_side, max_pixels
        Largest side and Rows × Columns accepted, as for
        :func:`~pacsnode.imaging.reader.read_film`; checked before decoding.

    Raises
    ------
    ImageReadError
        ``COLOUR`` for a colour picture, ``UNSUPPORTED_PHOTOMETRIC`` for a pixel format
        that is not grey or RGB (1-bit, CMYK, floating point), ``MULTI_FRAME`` for an
        animated PNG or a multi-picture JPEG, ``ABSURD_DIMENSIONS`` for a size out of
        range, ``CORRUPT_PIXEL_DATA`` when it cannot be decoded, ``NOT_DICOM`` when it is
        neither PNG nor JPEG.
    """
    kind = picture_format(data) or "picture"
    try:
        im = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            ReadFailure.ABSURD_DIMENSIONS, f"the {kind} is too large: {exc}"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(
            ReadFailure.CORRUPT_PIXEL_DATA, f"the {kind} cannot be read: {exc}"
        ) from exc
    with im:
        fmt = _FORMATS.get(str(im.format))
        if fmt is None:
            raise ImageReadError(
                ReadFailure.NOT_DICOM, f"the file is {im.format}, not DICOM, PNG or JPEG"
            )
        columns, rows = im.size
        check_dimensions(
            rows,
            columns,
            f"the {fmt} is {rows} × {columns} pixels (rows × columns); pictures",
            max_side,
            max_pixels,
        )
        frames = int(getattr(im, "n_frames", 1))
        if frames > 1:
            raise ImageReadError(
                ReadFailure.MULTI_FRAME,
                f"the {fmt} holds {frames} pictures; only single pictures are read",
            )
        try:
            im.load()
            shown = ImageOps.exif_transpose(im)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageReadError(
                ReadFailure.CORRUPT_PIXEL_DATA, f"the {fmt} cannot be decoded: {exc}"
            ) from exc
        return _grey(shown, fmt)


def wrap_picture(
    data: bytes,
    filename: str,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Dataset:
    """A Secondary Capture film holding a PNG or JPEG picture, ready to save and read.

    The film is MONOCHROME2, 8- or 16-bit as the picture is (:func:`picture_pixels`), with
    no pixel spacing, so measurements on it are in pixels. Its patient is unknown (name and
    ID empty: Type 2, and no made-up identity that would merge different people's pictures
    in a PACS), its Conversion Type is WSD (workstation), its Series Description
    "pacsnode import of <filename>". An 8-bit picture carries the window that shows its
    levels as they are (0 black, 255 white); a 16-bit one none, so the reader and viewers
    use the range of its values. Its UIDs derive from the picture's bytes
    (:func:`~pacsnode.export.uids.import_uids`): the same picture gives the same film.

    Parameters
    ----------
    data
        The picture file's bytes.
    filename
        The picture's file name, for the Series Description only (cut to fit).
    max_side, max_pixels
        Size limits, as for :func:`picture_pixels`.

    Raises
    ------
    ImageReadError
        As for :func:`picture_pixels`.
    """
    fmt = picture_format(data) or "picture"
    pixels = picture_pixels(data, max_side=max_side, max_pixels=max_pixels)
    uids = import_uids(hashlib.sha256(data).hexdigest())
    node = NodeIdentity()
    description, charset = _series_description(filename)
    # highdicom's SCImage insists on a patient orientation (or a slide), which a picture
    # does not tell: its base class, then the SC modules by hand.
    ds = hd.SOPClass(
        study_instance_uid=uids.study_instance_uid,
        series_instance_uid=uids.series_instance_uid,
        series_number=PICTURE_SERIES_NUMBER,
        sop_instance_uid=uids.sop_instance_uid,
        sop_class_uid=SecondaryCaptureImageStorage,
        instance_number=1,
        modality="OT",
        **node.equipment,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=description,
        specific_character_set=charset,
    )
    # Patient and study: unknown, so Type 2 attributes empty.
    ds.PatientName = ""
    ds.PatientID = ""
    ds.StudyID = ""
    ds.Laterality = ""  # General Series, Type 2C for a paired body part: not known
    ds.ConversionType = "WSD"  # SC Equipment: converted on a workstation
    ds.ImageType = ["DERIVED", "SECONDARY"]
    # General Image, Type 2C without Image Orientation: the directions are not known.
    ds.PatientOrientation = ""
    ds.DerivationDescription = (
        f"{fmt} picture wrapped by pacsnode; no pixel spacing, measurements in pixels"
    )
    if fmt == "JPEG":
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.set_pixel_data(pixels, "MONOCHROME2", bits, generate_instance_uid=False)
    if bits == 8:
        # LINEAR with centre 128 and width 256 maps level v to v / 255 exactly.
        ds.WindowCenter, ds.WindowWidth = 128, 256
    return ds


def _grey(im: Image.Image, fmt: str) -> NDArray[np.uint8] | NDArray[np.uint16]:
    mode = im.mode
    if mode in _GREY_MODES:
        values = np.asarray(im)
        if values.ndim == 3:  # LA: grey and alpha
            values = values[..., 0]
        if _GREY_MODES[mode] == 8:
            return values.astype(np.uint8)
        if values.min(initial=0) < 0 or values.max(initial=0) > 65535:
            raise ImageReadError(
                ReadFailure.UNSUPPORTED_PHOTOMETRIC,
                f"the {fmt} holds grey values outside 0 to 65535",
            )
        return values.astype(np.uint16)
    if mode in _RGB_MODES:
        # A palette with transparency warns when converted straight to RGB.
        rgba = im if mode in ("RGB", "RGBA", "RGBX") else im.convert("RGBA")
        rgb = np.asarray(rgba)[..., :3].astype(np.int16)
        spread = rgb.max(axis=2) - rgb.min(axis=2)
        coloured = int(np.count_nonzero(spread > GREY_TOLERANCE))
        if coloured:
            raise ImageReadError(
                ReadFailure.COLOUR,
                f"the {fmt} is in colour: {coloured:,} of its {spread.size:,} pixels have red, "
                f"green and blue more than {GREY_TOLERANCE} levels apart; only grey pictures "
                "are read (an RGB one only when its three channels are equal)",
            )
        return np.rint(rgb.mean(axis=2)).astype(np.uint8)
    raise ImageReadError(
        ReadFailure.UNSUPPORTED_PHOTOMETRIC,
        f"the {fmt}'s pixels are {_MODE_NAMES.get(mode, mode)}; only grey (8- or 16-bit) "
        "and RGB pictures with equal channels are read",
    )


def _series_description(filename: str) -> tuple[str, str | None]:
    """Series Description naming the file, within LO's 64 characters and without its
    forbidden backslash and control characters; and the character set it needs."""
    # Undecodable bytes of a file name (surrogate escapes) become "?".
    name = filename.encode("utf-8", "replace").decode("utf-8")
    name = "".join(c if c.isprintable() and c != "\\" else "?" for c in name).strip()
    room = _LO_CHARS - len(_DESCRIPTION_PREFIX)
    if len(name) > room:
        name = name[: room - 3] + "..."
    text = _DESCRIPTION_PREFIX + (name or "a picture")
    return text, (None if text.isascii() else "ISO_IR 192")
