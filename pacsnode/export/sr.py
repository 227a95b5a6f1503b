"""The spine localisation of one film as a Comprehensive SR (TID 1500 Measurement Report)
with 2-D spatial coordinates, in the film's study and a series of its own.

Two measurement groups describe the one spine region:

1. the oriented box (TID 1410 with an Image Region on the film: a closed POLYLINE, which
   is how 2-D SCOORD draws a polygon): its length and width;
2. the localisation mask, by reference to segment 1 of the SEG built from it (TID 1410
   with a Referenced Segmentation Frame): its area.

They are two groups because TID 1410 measures the region it references: the area of the
mask is not the area of the box around it, and a group takes either a region or a
segment, not both (DICOM-NOTES). The second group shares its Tracking UID with the SEG
segment, so a reader can join the two objects.

Given the stack's :class:`~pacsnode.analysis.reading.SpineReading`, three groups per
vertebra follow, head first, and the report says when the vertebrae could not be
identified (:mod:`pacsnode.export.vertebrae`); then, when the reading has its ER read-out,
one group per finding of it and its Impression (:mod:`pacsnode.export.readout`).

Lengths and areas are in mm when the film's spacing is known, and each carries a
Measurement Method saying which spacing (calibrated, magnification-corrected, detector);
otherwise they are in pixels (UCUM ``{pixels}``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from pacsnode.errors import ExportError
from pacsnode.export._measurements import (
    LOCAL_SCHEME,
    PIXELS,
    SPACING_METHODS,
    measurement,
    pixel_mm,
    segment_reference,
)
from pacsnode.export._source import film_spacing, header_copy
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity
from pacsnode.export.readout import impression_item, readout_groups
from pacsnode.export.regions import SpineRegion, resolve_region
from pacsnode.export.seg import SEGMENT_LABEL, SPINE_SEGMENT_NUMBER, spine_tracking_uid
from pacsnode.export.uids import ExportKind, export_uids, name_based_uid
from pacsnode.export.vertebrae import (
    QUALITATIVE_EVALUATIONS,
    identification_statement,
    vertebra_groups,
)
from pacsnode.imaging.reader import PixelSpacing

if TYPE_CHECKING:  # the analysis stack imports torch; the builders need only the result
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.lowres import OrientedBox
    from pacsnode.analysis.reading import SpineReading

__all__ = [
    "LOCAL_SCHEME",
    "PIXELS",
    "PROCEDURE_REPORTED",
    "SPACING_METHODS",
    "SR_SERIES_DESCRIPTION",
    "SR_SERIES_NUMBER",
    "box_sides",
    "build_spine_sr",
]

SR_SERIES_NUMBER = 9902
SR_SERIES_DESCRIPTION = "pacsnode spine measurements"
BOX_LABEL = "Spine region box"

PROCEDURE_REPORTED = codes.SCT.PlainRadiography
"""SCT 168537006: pydicom's dictionary holds no spine-specific radiography procedure."""


def box_sides(box: OrientedBox, spacing: PixelSpacing) -> tuple[float, float]:
    """(length, width) of an oriented box: in mm when ``spacing`` is known, else pixels.

    The sides are measured between the corners, with x scaled by the column spacing and
    y by the row spacing, so non-square pixels are handled. Corners run around the box
    starting along its long axis (:func:`pacsnode.analysis.lowres.oriented_box`).
    """
    (x0, y0), (x1, y1), (x2, y2) = box.corners[:3]
    sy, sx = pixel_mm(spacing) or (1.0, 1.0)
    return (
        math.hypot((x1 - x0) * sx, (y1 - y0) * sy),
        math.hypot((x2 - x1) * sx, (y2 - y1) * sy),
    )


def build_spine_sr(
    source: Dataset,
    seg_dataset: Dataset,
    localisation: Localisation,
    *,
    algorithm: AlgorithmInfo,
    region: SpineRegion | str | None = None,
    spacing: PixelSpacing | None = None,
    node: NodeIdentity | None = None,
    series_number: int = SR_SERIES_NUMBER,
    reading: SpineReading | None = None,
) -> hd.sr.ComprehensiveSR:
    """A Measurement Report of the spine region found on one film.

    Parameters
    ----------
    source
        The analysed film (pixel data not needed; not changed).
    seg_dataset
        The SEG of the same localisation (:func:`~pacsnode.export.seg.build_spine_seg`),
        referenced by the second measurement group and listed as evidence.
    localisation
        The localiser's result: its ``mask`` (rows, cols) gives the area, its ``box``
        (corners in (x = column, y = row) pixels from the top-left corner of the
        top-left pixel) the polygon, length and width.
    algorithm
        The model that made the localisation; its version keys the UIDs.
    region
        The spine region named as the finding; by default read from the film's header.
    spacing
        The film's pixel spacing (``Film.spacing``); read from the header when None.
    node
        The node as device observer; defaults to :class:`NodeIdentity`.
    series_number
        Series Number of the new series.
    reading
        The vertebrae found on the film, when the full stack ran: three more measurement
        groups per vertebra (:func:`~pacsnode.export.vertebrae.vertebra_groups`), which
        refer to the vertebra segments ``seg_dataset`` must then hold, and a statement that
        identification was not possible when the reading has no reference vertebra
        (:func:`~pacsnode.export.vertebrae.identification_statement`); and with its
        ``readout``, a group per finding and the Impression
        (:func:`~pacsnode.export.readout.readout_groups`).

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        Complete, preliminary and unverified: an automated result awaiting a reader.

    Raises
    ------
    ExportError
        When nothing was found (no box or an empty mask), the film lacks its UIDs, or
        ``seg_dataset`` is not a SEG of this film.
    """
    node = node or NodeIdentity()
    header = header_copy(source)
    film_uid = str(header.SOPInstanceUID)
    box = localisation.box
    mask = np.asarray(localisation.mask)
    if box is None or not mask.any():
        raise ExportError(f"no spine region on film {film_uid}: nothing to report")
    if mask.shape != (int(header.Rows), int(header.Columns)):
        raise ValueError(f"mask shape {mask.shape} does not match the film's Rows × Columns")
    _check_seg(seg_dataset, header)
    spine = resolve_region(source, region)
    spacing = film_spacing(source, spacing)

    film_ref = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=header.SOPClassUID, referenced_sop_instance_uid=film_uid
    )
    corners = np.asarray(box.corners, dtype=np.float64)
    polygon = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.vstack([corners, corners[:1]]),  # closed: a 2-D polygon
        source_image=film_ref,
    )
    length, width = box_sides(box, spacing)
    box_group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=name_based_uid("tracking", "spine-box", film_uid, algorithm.version),
            identifier=BOX_LABEL,
        ),
        referenced_region=polygon,
        finding_type=spine.code,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm.sr_identification(),
        geometric_purpose=codes.SCT.BoundedBy,
        measurements=[
            measurement(codes.SCT.Length, length, spacing, area=False),
            measurement(codes.SCT.Width, width, spacing, area=False),
        ],
    )

    row_mm, col_mm = pixel_mm(spacing) or (1.0, 1.0)
    area = float(np.count_nonzero(mask)) * row_mm * col_mm
    segment_group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=spine_tracking_uid(film_uid, algorithm.version), identifier=SEGMENT_LABEL
        ),
        referenced_segment=segment_reference(seg_dataset, header, SPINE_SEGMENT_NUMBER),
        finding_type=spine.code,
        finding_category=codes.SCT.AnatomicalStructure,
        algorithm_id=algorithm.sr_identification(),
        measurements=[measurement(codes.SCT.Area, area, spacing, area=True)],
    )

    vertebrae: list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations] = []
    findings: list[hd.sr.MeasurementsAndQualitativeEvaluations] = []
    evaluations: list[hd.sr.ContentItem] = []
    if reading is not None:
        vertebrae = vertebra_groups(
            reading, seg_dataset, header, algorithm=algorithm, spacing=spacing
        )
        statement = identification_statement(reading)
        if statement is not None:
            evaluations.extend(statement.ContentSequence)
        if reading.readout is not None:
            findings = readout_groups(reading.readout, header, algorithm=algorithm, spacing=spacing)
            impression = impression_item(reading.readout)
            if impression is not None:
                evaluations.append(impression)
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.cid270.Device,
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=node.uid,
                    name=node.name,
                    manufacturer_name=node.manufacturer,
                    model_name=node.model_name,
                    serial_number=node.serial_number,
                ),
            )
        ),
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=[box_group, segment_group, *vertebrae, *findings],
    )
    if evaluations:  # TID 1500 row 12, after Imaging Measurements
        container = hd.sr.ContainerContentItem(
            name=QUALITATIVE_EVALUATIONS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        container.ContentSequence = hd.sr.ContentSequence(evaluations)
        report[0].ContentSequence.append(container)
    uids = export_uids(film_uid, algorithm.version, ExportKind.SR)
    return hd.sr.ComprehensiveSR(
        evidence=[header, seg_dataset],
        content=report[0],
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        **node.equipment,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME,
                name="pacsnode local codes",
                responsible_organization="pacsnode",
            )
        ],
    )


def _check_seg(seg: Dataset, film: Dataset) -> None:
    if seg.get("Modality") != "SEG" or seg.get("StudyInstanceUID") != film.StudyInstanceUID:
        raise ExportError("the SEG given is not a segmentation in the film's study")
    sources = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence") or ()
        for item in series.get("ReferencedInstanceSequence") or ()
    }
    if str(film.SOPInstanceUID) not in sources:
        raise ExportError(f"the SEG given was not derived from film {film.SOPInstanceUID}")
