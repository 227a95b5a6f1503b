"""Pieces the SR builders share: pacsnode's local coding scheme, the units and spacing
basis of a measurement, and the reference from a measurement group to a SEG segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pacsnode.errors import ExportError
from pacsnode.imaging.reader import PixelSpacing, SpacingBasis

__all__ = [
    "LOCAL_SCHEME",
    "PIXELS",
    "SPACING_METHODS",
    "measurement",
    "mm_distance",
    "pixel_mm",
    "segment_reference",
]

PIXELS = Code("{pixels}", "UCUM", "Pixels")
"""Unit of lengths (pixel pitches) and areas (pixel counts) when spacing is unknown, as
highdicom writes Pixel Data Rows/Columns."""

LOCAL_SCHEME = "99PACSNODE"
"""pacsnode's local coding scheme (PS3.16 §8: a designator beginning "99"), declared in
the SR's Coding Scheme Identification Sequence. No standard concept names the plane a
film's pixel spacing holds in."""

SPACING_METHODS = {
    SpacingBasis.CALIBRATED: Code(
        "SPC-CALIBRATED", LOCAL_SCHEME, "Pixel Spacing calibrated to the patient"
    ),
    SpacingBasis.MAGNIFICATION_CORRECTED: Code(
        "SPC-MAGNIFICATION",
        LOCAL_SCHEME,
        "Imager Pixel Spacing / Estimated Radiographic Magnification",
    ),
    SpacingBasis.DETECTOR: Code(
        "SPC-DETECTOR", LOCAL_SCHEME, "Imager Pixel Spacing at the detector, not corrected"
    ),
}
"""Measurement Method of a measurement in mm: the spacing basis (PS3.3 §10.7) it used."""


def pixel_mm(spacing: PixelSpacing) -> tuple[float, float] | None:
    """(row, col) spacing in mm when measurements can be given in mm, else None."""
    if spacing.basis not in SPACING_METHODS or not (spacing.row_mm and spacing.col_mm):
        return None
    return float(spacing.row_mm), float(spacing.col_mm)


def mm_distance(p: tuple[float, float], q: tuple[float, float], spacing: PixelSpacing) -> float:
    """Distance between two (x, y) film points: in mm when ``spacing`` is known (x scaled
    by the column spacing, y by the row spacing), else in pixels."""
    row_mm, col_mm = pixel_mm(spacing) or (1.0, 1.0)
    return float(((q[0] - p[0]) * col_mm) ** 2 + ((q[1] - p[1]) * row_mm) ** 2) ** 0.5


def measurement(
    name: Code,
    value: float,
    spacing: PixelSpacing,
    *,
    area: bool,
    finding_sites: Sequence[hd.sr.FindingSite] | None = None,
) -> hd.sr.Measurement:
    """A length (or area) in mm (mm²) with the spacing basis as its Measurement Method
    when ``spacing`` is known, else in pixels with no method; ``value`` is already in
    those units."""
    sites = list(finding_sites) if finding_sites else None
    if pixel_mm(spacing) is None:
        return hd.sr.Measurement(name=name, value=float(value), unit=PIXELS, finding_sites=sites)
    return hd.sr.Measurement(
        name=name,
        value=float(value),
        unit=codes.UCUM.SquareMillimeter if area else codes.UCUM.Millimeter,
        method=SPACING_METHODS[spacing.basis],
        finding_sites=sites,
    )


def segment_reference(
    seg: Dataset, film: Dataset, segment_number: int
) -> hd.sr.ReferencedSegmentationFrame:
    """TID 1410's Referenced Segmentation Frame for one segment of a SEG of ``film``.

    highdicom writes Referenced Segment Number beside Referenced Frame Number; PS3.3 makes
    each conditional on the other's absence, and dciodvfy rejects both together
    (DICOM-NOTES). A BINARY SEG of a single-frame film has one frame per segment, so the
    frame number alone names the segment; it is looked up in the SEG's per-frame Segment
    Identification rather than assumed. The film, single-frame, is referenced without
    frame numbers.

    Raises
    ------
    ExportError
        When the SEG has no frame, or more than one, for ``segment_number``.
    """
    # With one segment, highdicom shares its Segment Identification across the frames.
    shared = (seg.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    frames = []
    for number, item in enumerate(seg.get("PerFrameFunctionalGroupsSequence") or (), 1):
        identification = item.get("SegmentIdentificationSequence") or shared.get(
            "SegmentIdentificationSequence"
        )
        if identification and int(identification[0].ReferencedSegmentNumber) == segment_number:
            frames.append(number)
    if len(frames) != 1:
        raise ExportError(
            f"the SEG has {len(frames)} frames for segment {segment_number}, expected one"
        )
    reference = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=frames[0],
        segment_number=segment_number,
        source_image=hd.sr.SourceImageForSegmentation(
            referenced_sop_class_uid=film.SOPClassUID,
            referenced_sop_instance_uid=film.SOPInstanceUID,
        ),
    )
    del reference[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
    return reference
