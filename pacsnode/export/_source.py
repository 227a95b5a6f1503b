"""What the SEG and SR builders take from the film: a pixel-free copy of its header that
highdicom can read, and the pixel spacing measurements use.
"""

from __future__ import annotations

import copy

from pydicom.dataset import Dataset

from pacsnode.errors import ExportError, ImageReadError
from pacsnode.imaging.reader import PixelSpacing, SpacingBasis, inspect_film

# highdicom reads these as plain attributes of the source (DICOM-NOTES): Type 2 in the
# Patient and General Study modules, so an empty value is what the film means by absence.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

PATIENT_PLANE = frozenset({SpacingBasis.CALIBRATED, SpacingBasis.MAGNIFICATION_CORRECTED})
"""Spacing bases that hold in the patient, and so may be written as a SEG's Pixel Spacing."""


def header_copy(source: Dataset) -> Dataset:
    """The film's attributes without pixel data, missing Type 2 patient and study
    attributes added empty; the film itself is not changed.

    Raises
    ------
    ExportError
        When a UID every derived object must copy is missing.
    """
    missing = [kw for kw in _REQUIRED if not str(source.get(kw) or "").strip()]
    if missing:
        raise ExportError(f"the film lacks {', '.join(missing)}; no result object can refer to it")
    header = Dataset()
    for element in source:
        if element.tag not in _PIXEL_TAGS:
            header.add(copy.deepcopy(element))
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def film_spacing(source: Dataset, spacing: PixelSpacing | None) -> PixelSpacing:
    """``spacing`` when the caller has it (``Film.spacing``), else the reader's reading of
    the film's header (PS3.3 §10.7)."""
    if spacing is not None:
        return spacing
    try:
        return inspect_film(source).spacing
    except ImageReadError as exc:
        raise ExportError(f"the film's pixel spacing cannot be read: {exc}") from exc
