"""The vertebrae of a :class:`~pacsnode.analysis.reading.SpineReading` as SR content: three
TID 1410 measurement groups per vertebra, and the report's statement when the vertebrae
could not be identified.

Per vertebra, head first, all three groups carry the vertebra's label as Tracking
Identifier and the Tracking UID of its SEG segment
(:func:`~pacsnode.export.seg.vertebra_tracking_uid`), its SNOMED CT code as Finding
(:func:`~pacsnode.export.seg.vertebra_code`; the generic Vertebra 51282000 for a positional
label "V3") and Anatomical Structure as Finding Category:

1. the body, by reference to its SEG segment (Referenced Segmentation Frame, built by hand
   as for the spine region): its area; its anterior, middle and posterior heights, each a
   Height (DCM 121207) whose Finding Site is the vertebra with the Topographical Modifier
   Anterior (SCT 255549009), Central (SCT 26216008) or Posterior (SCT 255551008);
   the height reduction and Genant grade when the body was graded, with its deformity
   shape and Compression fracture of vertebral column (SCT 42942008) from grade 1; and,
   for an identified vertebra, the probability that its label is right;
2. its outline on the film: a closed 2-D POLYLINE with Geometric Purpose Outline
   (DCM 111041);
3. its centroid: a 2-D POINT with Geometric Purpose Center of Mass (DCM 128138).

They are three groups because a TID 1410 group takes one region reference: a segment or a
region, and one graphic (DICOM-NOTES). Every measurement is of the SEG's mask, which is
why they sit in the first group. Lengths and areas are in mm when the film's spacing is
known, with the spacing basis as Measurement Method, else in pixels. Neither DICOM nor
SNOMED CT codes a Genant grade, a deformity shape, a height reduction or a naming
probability: those concepts are local codes (:data:`LOCAL_SCHEME`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pacsnode.errors import ExportError
from pacsnode.export._measurements import (
    LOCAL_SCHEME,
    measurement,
    mm_distance,
    pixel_mm,
    segment_reference,
)
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.export.seg import vertebra_code, vertebra_tracking_uid
from pacsnode.imaging.reader import PixelSpacing

if TYPE_CHECKING:
    from pacsnode.analysis.reading import SpineReading, Vertebra

__all__ = [
    "CLINICAL_FINDING",
    "COMPRESSION_FRACTURE",
    "DEFORMITY_SHAPE",
    "DEFORMITY_SHAPES",
    "GENANT_GRADE",
    "GENANT_GRADES",
    "HEIGHT_MODIFIERS",
    "HEIGHT_REDUCTION",
    "IDENTIFICATION_NOT_POSSIBLE",
    "LABEL_PROBABILITY",
    "QUALITATIVE_EVALUATIONS",
    "VERTEBRAL_IDENTIFICATION",
    "identification_statement",
    "vertebra_groups",
]

HEIGHT_MODIFIERS = {
    "anterior": codes.SCT.Anterior,  # 255549009
    "middle": codes.SCT.Central,  # 26216008
    "posterior": codes.SCT.Posterior,  # 255551008
}
"""Topographical Modifier of each body height's Finding Site: no standard code names an
anterior, middle or posterior vertebral height (DICOM-NOTES)."""

COMPRESSION_FRACTURE = Code("42942008", "SCT", "Compression fracture of vertebral column")
CLINICAL_FINDING = Code("404684003", "SCT", "Clinical finding")
"""Concept name of the fracture evaluation: DCM 121071 "Finding" already names the
vertebra in the same group, and highdicom reads the first such item as its type."""

# Local codes: PS3.16 has none for Genant's semi-quantitative reading (DICOM-NOTES).
GENANT_GRADE = Code("GENANT-GRADE", LOCAL_SCHEME, "Genant semiquantitative grade")
GENANT_GRADES = (
    Code("GENANT-0", LOCAL_SCHEME, "Genant grade 0 (normal, under 20 % height loss)"),
    Code("GENANT-1", LOCAL_SCHEME, "Genant grade 1 (mild, 20-25 % height loss)"),
    Code("GENANT-2", LOCAL_SCHEME, "Genant grade 2 (moderate, 25-40 % height loss)"),
    Code("GENANT-3", LOCAL_SCHEME, "Genant grade 3 (severe, over 40 % height loss)"),
)
DEFORMITY_SHAPE = Code("DEFORMITY", LOCAL_SCHEME, "Vertebral deformity shape")
DEFORMITY_SHAPES = {
    "wedge": Code("DEF-WEDGE", LOCAL_SCHEME, "Wedge (anterior height lowest)"),
    "biconcave": Code("DEF-BICONCAVE", LOCAL_SCHEME, "Biconcave (middle height lowest)"),
    "crush": Code("DEF-CRUSH", LOCAL_SCHEME, "Crush (posterior height lowest, or whole body)"),
}
"""By :class:`~pacsnode.analysis.findings.Deformity` value."""
HEIGHT_REDUCTION = Code("HEIGHT-LOSS", LOCAL_SCHEME, "Vertebral body height reduction")
"""In %: the lowest height against the expected one, as Genant grades it."""
GRADE_PROBABILITY = Code("GRADE-PROB", LOCAL_SCHEME, "Probability the Genant grade is right")
"""In [0, 1] (UCUM "1"): the measured height loss against the grade's band, given the
measurement error (:func:`pacsnode.analysis.findings.grade_confidence`)."""
LABEL_PROBABILITY = Code("LABEL-PROB", LOCAL_SCHEME, "Probability the vertebra label is right")
"""In [0, 1] (UCUM "1"); written for identified vertebrae only: a positional label makes
no claim to be right or wrong."""

QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
"""TID 1500's container for report-level evaluations, beside Imaging Measurements."""
VERTEBRAL_IDENTIFICATION = Code("VERT-IDENT", LOCAL_SCHEME, "Vertebral identification")
IDENTIFICATION_NOT_POSSIBLE = Code(
    "VERT-IDENT-NONE", LOCAL_SCHEME, "Not possible (labels are positions from the top)"
)


def vertebra_groups(
    reading: SpineReading,
    seg: Dataset,
    film: Dataset,
    *,
    algorithm: AlgorithmInfo,
    spacing: PixelSpacing,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """The three measurement groups of each vertebra in ``reading``, head first.

    Parameters
    ----------
    reading
        The vertebrae: masks (rows, cols), outlines and centroids in (x, y) film pixels
        from the top-left corner of the top-left pixel, heights in film pixels.
    seg
        The SEG built with the same vertebrae and ``algorithm``: each vertebra must be a
        segment labelled with its label and carrying its tracking UID.
    film
        The analysed film's header.
    algorithm
        The algorithm of the SEG and SR; its version keys the tracking UIDs.
    spacing
        The film's pixel spacing: heights and areas in mm when known, else pixels.

    Raises
    ------
    ExportError
        When a vertebra has no segment in ``seg``, or a segment of another algorithm.
    """
    film_uid = str(film.SOPInstanceUID)
    segments = {str(item.SegmentLabel): item for item in seg.get("SegmentSequence") or ()}
    groups = []
    for vertebra in reading.vertebrae:
        segment = segments.get(vertebra.label)
        uid = vertebra_tracking_uid(film_uid, algorithm.version, vertebra.label)
        if segment is None:
            raise ExportError(f"the SEG has no segment for vertebra {vertebra.label}")
        if segment.get("TrackingUID") != uid:
            raise ExportError(
                f"segment {vertebra.label} of the SEG was not made by {algorithm.version}"
            )
        code = vertebra_code(vertebra.label)
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(uid=uid, identifier=vertebra.label),
            "finding_type": code,
            "finding_category": codes.SCT.AnatomicalStructure,
            "algorithm_id": algorithm.sr_identification(),
        }
        evaluations = _evaluations(vertebra)
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=segment_reference(seg, film, int(segment.SegmentNumber)),
                measurements=_measurements(vertebra, code, spacing),
                qualitative_evaluations=evaluations or None,
                **common,
            )
        )
        source = hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=film.SOPClassUID, referenced_sop_instance_uid=film_uid
        )
        outline = np.asarray(vertebra.outline, dtype=np.float64)
        if outline.ndim != 2 or outline.shape[1] != 2 or len(outline) < 3:
            raise ValueError(f"the outline of {vertebra.label} is not a polygon of (x, y)")
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=np.vstack([outline, outline[:1]]),  # closed: a polygon
                    source_image=source,
                ),
                geometric_purpose=codes.DCM.Outline,
                **common,
            )
        )
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_region=hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POINT,
                    graphic_data=np.asarray([vertebra.centroid], dtype=np.float64),
                    source_image=source,
                ),
                geometric_purpose=codes.DCM.CenterOfMass,
                **common,
            )
        )
    return groups


def identification_statement(reading: SpineReading) -> hd.sr.ContainerContentItem | None:
    """TID 1500's Qualitative Evaluations container saying that the vertebrae could not
    be identified, when ``reading`` has no reference vertebra; None when it has one."""
    if reading.identified:
        return None
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.CodeContentItem(
                name=VERTEBRAL_IDENTIFICATION,
                value=IDENTIFICATION_NOT_POSSIBLE,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        ]
    )
    return container


def _measurements(vertebra: Vertebra, code: Code, spacing: PixelSpacing) -> list[hd.sr.Measurement]:
    row_mm, col_mm = pixel_mm(spacing) or (1.0, 1.0)
    area = float(vertebra.area_px) * row_mm * col_mm
    out = [measurement(codes.SCT.Area, area, spacing, area=True)]
    heights = vertebra.heights
    if heights is not None:
        ends = {
            "anterior": (heights.anterior_superior, heights.anterior_inferior),
            "middle": (heights.superior_midpoint, heights.inferior_midpoint),
            "posterior": (heights.posterior_superior, heights.posterior_inferior),
        }
        for where, (top, bottom) in ends.items():
            site = hd.sr.FindingSite(code, topographical_modifier=HEIGHT_MODIFIERS[where])
            out.append(
                measurement(
                    codes.DCM.Height,
                    mm_distance(top, bottom, spacing),
                    spacing,
                    area=False,
                    finding_sites=[site],
                )
            )
    if vertebra.finding is not None:
        # A ratio of the pixel heights: it does not depend on the spacing basis.
        out.append(
            hd.sr.Measurement(
                name=HEIGHT_REDUCTION,
                value=100.0 * float(vertebra.finding.height_loss),
                unit=codes.UCUM.Percent,
            )
        )
        out.append(
            hd.sr.Measurement(
                name=GRADE_PROBABILITY,
                value=round(float(vertebra.finding.confidence), 4),
                unit=codes.UCUM.NoUnits,
            )
        )
    if vertebra.identified:
        out.append(
            hd.sr.Measurement(
                name=LABEL_PROBABILITY,
                value=float(vertebra.confidence),
                unit=codes.UCUM.NoUnits,
            )
        )
    return out


def _evaluations(vertebra: Vertebra) -> Sequence[hd.sr.QualitativeEvaluation]:
    """Genant grade of a graded body (0 included: graded normal is not the same as not
    graded); from grade 1 also its shape and the compression fracture it stands for."""
    finding = vertebra.finding
    if finding is None:
        return []
    out = [hd.sr.QualitativeEvaluation(GENANT_GRADE, GENANT_GRADES[finding.grade])]
    if finding.grade >= 1:
        out.append(hd.sr.QualitativeEvaluation(CLINICAL_FINDING, COMPRESSION_FRACTURE))
        shape = DEFORMITY_SHAPES.get(finding.deformity.value)
        if shape is not None:
            out.append(hd.sr.QualitativeEvaluation(DEFORMITY_SHAPE, shape))
    return out
