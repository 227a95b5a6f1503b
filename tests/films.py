"""Small synthetic DX films, written in any transfer syntax, for the reader's tests; and
the 8-bit Secondary Capture a picture export gives.

Encoders are pydicom's own where it has them; JPEG (and dcmtk cross-checks) use dcmtk's
command-line tools, and tests that need those carry :data:`NEEDS_DCMTK`.
"""

from __future__ import annotations

import copy
import io
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
)

ROWS, COLUMNS = 64, 48
BONE = (slice(12, 52), slice(14, 34))
"""Rows and columns of the bright block standing in for a vertebral body."""
BACKGROUND = (slice(0, 64), slice(0, 10))
"""A strip of soft tissue left of the bone."""
IMAGER_SPACING_MM = 0.15

DCMTK_TOOLS = ("dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv")
HAVE_DCMTK = all(shutil.which(tool) for tool in DCMTK_TOOLS)
NEEDS_DCMTK = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        not HAVE_DCMTK,
        reason=f"dcmtk tools {', '.join(DCMTK_TOOLS)} are not all on PATH (apt install dcmtk)",
    ),
]
"""Marks for a test that runs dcmtk: ``@pytest.mark.parametrize(..., marks=NEEDS_DCMTK)``."""

Encoder = Literal["pydicom", "dcmtk", "pillow"]

# dcmtk command line per transfer syntax: tool and options.
_DCMTK: dict[str, tuple[str, ...]] = {
    ImplicitVRLittleEndian: ("dcmconv", "+ti"),
    ExplicitVRLittleEndian: ("dcmconv", "+te"),
    ExplicitVRBigEndian: ("dcmconv", "+tb"),
    DeflatedExplicitVRLittleEndian: ("dcmconv", "+td"),
    RLELossless: ("dcmcrle",),
    JPEGBaseline8Bit: ("dcmcjpeg", "+eb"),
    JPEGExtended12Bit: ("dcmcjpeg", "+ee"),
    JPEGLossless: ("dcmcjpeg", "+el"),
    JPEGLosslessSV1: ("dcmcjpeg", "+e1"),
    JPEGLSLossless: ("dcmcjpls", "+el"),
    JPEGLSNearLossless: ("dcmcjpls", "+en"),
}
_DCMTK_ONLY = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1})
_PYDICOM_COMPRESS: dict[str, dict[str, Any]] = {
    RLELossless: {},
    JPEGLSLossless: {},
    JPEGLSNearLossless: {"jls_error": 2},
    JPEG2000Lossless: {},
    JPEG2000: {"j2k_cr": [4]},
}


def film_pixels(bits_stored: int = 12, *, rows: int = ROWS, columns: int = COLUMNS) -> np.ndarray:
    """Stored values of a lateral-spine-like film, shape (rows, columns), bone bright.

    A soft-tissue ramp from top to bottom with fixed noise, and a bright block at
    :data:`BONE`; full scale is ``2**bits_stored - 1``. 8 bits or fewer give uint8.
    """
    rng = np.random.default_rng(7)
    ramp = np.linspace(300.0, 700.0, rows)[:, None] * np.ones((1, columns))
    values = ramp + rng.uniform(0.0, 40.0, (rows, columns))
    values[BONE] = 2800.0 + rng.uniform(0.0, 300.0, values[BONE].shape)
    values *= (2**bits_stored - 1) / 4095.0
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    return np.rint(values).astype(dtype)


def default_window(bits_stored: int) -> tuple[float, float]:
    """A (centre, width) showing the whole of :func:`film_pixels` without clipping."""
    full = 2**bits_stored
    return round(0.4 * full, 1), round(0.8 * full, 1)


def make_film(
    pixels: np.ndarray | None = None,
    *,
    bits_stored: int | None = None,
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    window: tuple[float, float] | Literal["default"] | None = "default",
    imager_spacing: tuple[float, float] | None = (IMAGER_SPACING_MM, IMAGER_SPACING_MM),
    magnification: float | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = (1.0, 0.0),
    sop_class_uid: str = DigitalXRayImageStorageForPresentation,
    modality: str = "DX",
) -> Dataset:
    """A DX For Presentation film (by default) in explicit VR little endian.

    Parameters
    ----------
    pixels
        Stored values as displayed for MONOCHROME2, shape (rows, columns); uint8 gives
        Bits Allocated 8. Defaults to :func:`film_pixels`.
    bits_stored
        Bits Stored; defaults to 12 for uint16 pixels and 8 for uint8.
    photometric
        MONOCHROME1 stores the inverted values with the window mirrored and an INVERSE
        Presentation LUT Shape, so it displays exactly as the MONOCHROME2 film does.
    window
        (centre, width) in modality units for MONOCHROME2, None for no window.
    imager_spacing, magnification, pixel_spacing
        Imager Pixel Spacing, Estimated Radiographic Magnification Factor and Pixel
        Spacing, as (row, column) spacing in mm; None leaves the attribute out.
    rescale
        (slope, intercept), or None to leave both out.
    sop_class_uid, modality
        For CR, For Processing or Secondary Capture variants.
    """
    if bits_stored is None:
        bits_stored = 8 if pixels is not None and pixels.dtype == np.uint8 else 12
    if pixels is None:
        pixels = film_pixels(bits_stored)
    if window == "default":
        window = default_window(bits_stored)
    full = 2**bits_stored - 1
    if photometric == "MONOCHROME1":
        pixels = (full - pixels.astype(np.int64)).astype(pixels.dtype)
        if window is not None:
            # LINEAR maps x to (x - (c - 0.5)) / (w - 1) + 0.5; mirrored x' = full - x
            # displays inverted with c' = full - c + 1.
            window = (full - window[0] + 1, window[1])

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1003"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Modality = modality
    ds.PatientName = "Phantom^Lateral"
    ds.PatientID = "PHANTOM-0001"
    ds.BodyPartExamined = "LSPINE"
    ds.ViewPosition = "LL"
    ds.PatientOrientation = ["A", "F"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = list(imager_spacing)
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = magnification
    if pixel_spacing is not None:
        ds.PixelSpacing = list(pixel_spacing)
    return ds


def make_secondary_capture(
    pixels: np.ndarray,
    *,
    photometric: Literal["MONOCHROME2", "RGB"] = "MONOCHROME2",
    window: tuple[float, float] | None = None,
) -> Dataset:
    """An 8-bit Secondary Capture as a teaching file or a picture export gives it: no pixel
    spacing, no window unless given, and the patient and study attributes left out.

    Parameters
    ----------
    pixels
        uint8, (rows, columns) for MONOCHROME2 or (rows, columns, 3) for RGB.
    """
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.2001"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2002"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2003"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.set_pixel_data(pixels, photometric, 8, generate_instance_uid=False)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    return ds


def set_raw(ds: Dataset, keyword: str, value: bytes) -> None:
    """Put an element in ``ds`` as a file would bring it, malformed values included."""
    number = tag_for_keyword(keyword)
    assert number is not None, keyword
    tag = Tag(number)
    ds._dict[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)


def encode(ds: Dataset, transfer_syntax: str, *, encoder: Encoder | None = None) -> bytes:
    """The bytes of a DICOM file (preamble, meta, data set) holding ``ds`` re-encoded.

    Parameters
    ----------
    ds
        A film in explicit VR little endian, as :func:`make_film` gives; not modified.
    transfer_syntax
        The syntax to write.
    encoder
        ``"pydicom"``, ``"dcmtk"``, or ``"pillow"`` (JPEG baseline of 8-bit films only);
        by default pydicom where it can encode the syntax (all but JPEG), dcmtk
        otherwise.
    """
    ts = UID(transfer_syntax)
    if encoder is None:
        encoder = "dcmtk" if ts in _DCMTK_ONLY else "pydicom"
    if encoder == "dcmtk":
        return _dcmtk(ds, ts)
    if encoder == "pillow":
        return _pillow_baseline(ds, ts)
    out = copy.deepcopy(ds)
    if ts in _PYDICOM_COMPRESS:
        out.compress(ts, generate_instance_uid=False, **_PYDICOM_COMPRESS[ts])
    elif ts.is_encapsulated:
        raise ValueError(f"pydicom cannot encode {ts.name}; use encoder='dcmtk'")
    else:
        if ts == ExplicitVRBigEndian and out.BitsAllocated == 16:
            # pydicom writes OW bytes as given: swap them for the big endian file.
            words = np.frombuffer(out.PixelData, dtype="<u2")
            out.PixelData = words.astype(">u2").tobytes()
        out.file_meta.TransferSyntaxUID = ts
    return to_bytes(out)


def to_bytes(ds: Dataset) -> bytes:
    """``ds`` as a DICOM file in its file meta's transfer syntax.

    pydicom's warnings about malformed values are silenced: tests write such values
    on purpose, to see how the reader takes them.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def bare_dataset_bytes(ds: Dataset, *, implicit_vr: bool) -> bytes:
    """``ds`` with no preamble and no file meta, as a DIMSE message carries it."""
    out = copy.deepcopy(ds)
    del out.file_meta
    buffer = io.BytesIO()
    out.save_as(buffer, implicit_vr=implicit_vr, little_endian=True)
    return buffer.getvalue()


def _pillow_baseline(ds: Dataset, ts: UID) -> bytes:
    if ts != JPEGBaseline8Bit or ds.BitsAllocated != 8:
        raise ValueError("pillow encodes JPEG baseline of 8-bit films only")
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buffer, format="JPEG", quality=90)
    out = copy.deepcopy(ds)
    out.PixelData = encapsulate([buffer.getvalue()])
    out["PixelData"].is_undefined_length = True
    out["PixelData"].VR = "OB"
    out.LossyImageCompression = "01"
    out.file_meta.TransferSyntaxUID = ts
    return to_bytes(out)


def _dcmtk(ds: Dataset, ts: UID) -> bytes:
    if ts not in _DCMTK:
        raise ValueError(f"dcmtk cannot encode {ts.name}")
    with tempfile.TemporaryDirectory(prefix="pacsnode-film-") as tmp:
        source, target = Path(tmp, "in.dcm"), Path(tmp, "out.dcm")
        source.write_bytes(to_bytes(ds))
        subprocess.run(
            [*_DCMTK[ts], str(source), str(target)], check=True, capture_output=True, timeout=60
        )
        return target.read_bytes()
