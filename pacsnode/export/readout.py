"""The ER read-out of a film (:class:`~pacsnode.analysis.readout.ReadOut`) as SR content:
one TID 1501 measurement group per finding, and the report's Impression.

Every group names the film as its source image and carries the algorithm; groups follow
the read-out's order:

1. a Cobb angle per span: Cobb angle (SCT 285285000) in degrees, unsigned, with two
   Finding Sites, the upper and the lower vertebra, each with the Topographical Modifier
   Superior (SCT 264217000) or Inferior (SCT 261089000) of the endplate used, and the two
   endplates as the SCOORD polylines the angle is inferred from; the curvature, lordosis or
   kyphosis, as a qualitative evaluation;
2. a step-off per disc: anterior and posterior Distance (DCM 121206), Finding Sites the two
   vertebrae with Anterior (SCT 255549009) or Posterior (SCT 255551008), each inferred
   from the pair of corners compared; then the step-off itself, the shift both lines
   share (what is flagged over 3 mm), a third Distance with the two vertebrae as Finding
   Sites and the Derivation SHARED-SHIFT; the step's direction is left to the slip's sign;
3. a slip per disc: its percentage (negative for a retrolisthesis) and Meyerding grade,
   and from grade I the finding Spondylolisthesis (SCT 274152003);
4. prevertebral soft tissue per level: a Distance whose Finding Site is the vertebra with
   the modifier Anterior, the group's finding Soft tissue (SCT 87784001), inferred from the
   line from the body's corner to the airway;
5. a critical finding (flag) each: its finding at its level with its Severity (SCT
   246112005); its sentence is the group's Tracking Identifier.

Lengths are in mm, with the spacing basis as Measurement Method, when the read-out's unit
is mm, else in pixels (UCUM ``{pixels}``). No standard code names a slip percentage, a
Meyerding grade, a sagittal curvature direction or a step-off of the vertebral body lines:
those are local codes (:data:`~pacsnode.export._measurements.LOCAL_SCHEME`), listed in
``docs/results.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pacsnode.export._measurements import LOCAL_SCHEME, PIXELS, SPACING_METHODS
from pacsnode.export.identity import AlgorithmInfo
from pacsnode.export.seg import vertebra_code
from pacsnode.export.uids import name_based_uid
from pacsnode.export.vertebrae import CLINICAL_FINDING, COMPRESSION_FRACTURE
from pacsnode.imaging.reader import PixelSpacing

if TYPE_CHECKING:
    from pacsnode.analysis.readout import ReadOut

__all__ = [
    "CURVATURE",
    "CURVATURES",
    "FLAG_FINDINGS",
    "MALALIGNMENT",
    "MEYERDING_GRADE",
    "MEYERDING_GRADES",
    "SEVERITIES",
    "SHARED_SHIFT",
    "SLIP_PERCENT",
    "SPONDYLOLISTHESIS",
    "STEP_OFF",
    "impression_item",
    "readout_groups",
]

SPONDYLOLISTHESIS = Code("274152003", "SCT", "Spondylolisthesis")
ENDPLATE_MODIFIERS = {"superior": codes.SCT.Superior, "inferior": codes.SCT.Inferior}
SIDE_MODIFIERS = {"anterior": codes.SCT.Anterior, "posterior": codes.SCT.Posterior}

# Local codes: neither DICOM nor SNOMED CT names these (DICOM-NOTES, docs/results.md).
CURVATURE = Code("CURVATURE", LOCAL_SCHEME, "Sagittal curvature between the endplates")
CURVATURES = {
    "lordosis": Code("CURV-LORDOSIS", LOCAL_SCHEME, "Lordosis (endplates open anteriorly)"),
    "kyphosis": Code("CURV-KYPHOSIS", LOCAL_SCHEME, "Kyphosis (endplates open posteriorly)"),
}
STEP_OFF = Code("STEP-OFF", LOCAL_SCHEME, "Step-off of the vertebral body lines")
SHARED_SHIFT = Code("SHARED-SHIFT", LOCAL_SCHEME, "Shift shared by the vertebral body lines")
"""The Derivation of a step-off group's own Distance: the shift both the anterior and the
posterior line show (:func:`pacsnode.analysis.readout.shared_step`)."""
SLIP_PERCENT = Code("SLIP-PERCENT", LOCAL_SCHEME, "Vertebral slip, % of the endplate below")
"""Negative for a retrolisthesis (:func:`pacsnode.analysis.readout.slip_percent`)."""
MEYERDING_GRADE = Code("MEYERDING", LOCAL_SCHEME, "Meyerding grade")
MEYERDING_GRADES = (
    # Under pacsnode.analysis.readout.SLIP_FLOOR_PERCENT, which may be retuned.
    Code("MEYERDING-0", LOCAL_SCHEME, "No slip (under the measurement floor)"),
    Code("MEYERDING-1", LOCAL_SCHEME, "Meyerding grade I (up to 25 %)"),
    Code("MEYERDING-2", LOCAL_SCHEME, "Meyerding grade II (26-50 %)"),
    Code("MEYERDING-3", LOCAL_SCHEME, "Meyerding grade III (51-75 %)"),
    Code("MEYERDING-4", LOCAL_SCHEME, "Meyerding grade IV (76-100 %)"),
    Code("MEYERDING-5", LOCAL_SCHEME, "Meyerding grade V (over 100 %)"),
)
MALALIGNMENT = Code("MALALIGNMENT", LOCAL_SCHEME, "Malalignment of the vertebral body lines")

FLAG_FINDINGS = {
    "malalignment": MALALIGNMENT,
    "soft_tissue": codes.SCT.Swelling,  # 65124004, at the vertebra's anterior side
    "fracture_grade3": COMPRESSION_FRACTURE,
    "listhesis_grade2": SPONDYLOLISTHESIS,
}
"""The finding of each flag kind (:data:`pacsnode.analysis.readout.FLAG_KINDS`); another
kind is written as the generic Clinical finding (SCT 404684003)."""

SEVERITIES = {
    "high": codes.SCT.Severe,  # 24484000
    "moderate": codes.SCT.Moderate,  # 6736007
    "low": codes.SCT.Mild,  # 255604002
}
"""Severity (SCT 246112005) of a flag by its ``severity``; an unknown one is left out."""


def readout_groups(
    readout: ReadOut,
    film: Dataset,
    *,
    algorithm: AlgorithmInfo,
    spacing: PixelSpacing,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The measurement groups of every finding in ``readout``, in the order above.

    Parameters
    ----------
    readout
        The read-out; its points are (x, y) film pixels from the top-left corner of the
        top-left pixel, its lengths in its ``unit``.
    film
        The analysed film's header.
    algorithm
        The algorithm of the SR; its version keys the tracking UIDs.
    spacing
        The film's pixel spacing: only its basis is used, as the Measurement Method of
        lengths in mm.
    """
    film_uid = str(film.SOPInstanceUID)
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=film.SOPClassUID, referenced_sop_instance_uid=film_uid
    )

    def group(
        kind: str,
        identifier: str,
        *,
        finding: Code,
        category: Code | None = codes.SCT.AnatomicalStructure,
        measurements: Sequence[hd.sr.Measurement] = (),
        evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
        sites: Sequence[hd.sr.FindingSite] = (),
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        # Only the last part of a name-based UID may hold "|"; a flag's sentence is not last.
        name = identifier.replace("|", "/")
        uid = name_based_uid("tracking", "readout", kind, name, film_uid, algorithm.version)
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=identifier),
            finding_type=finding,
            finding_category=category,
            finding_sites=list(sites) or None,
            algorithm_id=algorithm.sr_identification(),
            measurements=list(measurements) or None,
            qualitative_evaluations=list(evaluations) or None,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(
                    referenced_sop_class_uid=film.SOPClassUID,
                    referenced_sop_instance_uid=film_uid,
                )
            ],
        )

    def line(*points: tuple[float, float]) -> hd.sr.CoordinatesForMeasurement:
        return hd.sr.CoordinatesForMeasurement(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.asarray(points, dtype=np.float64),
            source_image=source,
        )

    def length(
        value: float,
        sites: Sequence[hd.sr.FindingSite],
        *lines: hd.sr.CoordinatesForMeasurement,
        derivation: Code | None = None,
    ) -> hd.sr.Measurement:
        if readout.unit == "mm":
            unit, method = codes.UCUM.Millimeter, SPACING_METHODS.get(spacing.basis)
        else:
            unit, method = PIXELS, None
        return hd.sr.Measurement(
            name=codes.DCM.Distance,
            value=abs(float(value)),
            unit=unit,
            method=method,
            derivation=derivation,
            finding_sites=list(sites),
            referenced_coordinates=list(lines) or None,
        )

    groups = []
    for cobb in readout.cobb:
        sites = [
            _site(cobb.upper, ENDPLATE_MODIFIERS[cobb.upper_endplate]),
            _site(cobb.lower, ENDPLATE_MODIFIERS[cobb.lower_endplate]),
        ]
        angle = hd.sr.Measurement(
            name=codes.SCT.CobbAngle,
            value=abs(float(cobb.degrees)),
            unit=codes.UCUM.Degree,
            finding_sites=[s for s in sites if s is not None],
            referenced_coordinates=[line(*cobb.upper_line), line(*cobb.lower_line)],
        )
        groups.append(
            group(
                "cobb",
                f"Cobb {cobb.span}",
                finding=_region(cobb.upper),
                measurements=[angle],
                evaluations=[hd.sr.QualitativeEvaluation(CURVATURE, CURVATURES[cobb.curvature])],
            )
        )
    for step in readout.step_offs:
        measurements = []
        for side, value, (upper, lower) in (
            ("anterior", step.anterior, step.anterior_points),
            ("posterior", step.posterior, step.posterior_points),
        ):
            modifier = SIDE_MODIFIERS[side]
            sites = [_site(step.upper, modifier), _site(step.lower, modifier)]
            measurements.append(
                length(value, [s for s in sites if s is not None], line(upper, lower))
            )
        measurements.append(
            length(step.shift, _sites(step.upper, step.lower), derivation=SHARED_SHIFT)
        )
        groups.append(
            group(
                "step-off",
                f"Step-off {step.level}",
                finding=STEP_OFF,
                category=None,
                measurements=measurements,
                sites=_sites(step.upper, step.lower),
            )
        )
    for slip in readout.slips:
        evaluations = [hd.sr.QualitativeEvaluation(MEYERDING_GRADE, MEYERDING_GRADES[slip.grade])]
        if slip.grade >= 1:
            evaluations.append(hd.sr.QualitativeEvaluation(CLINICAL_FINDING, SPONDYLOLISTHESIS))
        groups.append(
            group(
                "slip",
                f"Slip {slip.level}",
                finding=_code(slip.upper) or codes.SCT.Spine,
                measurements=[
                    hd.sr.Measurement(
                        name=SLIP_PERCENT, value=float(slip.percent), unit=codes.UCUM.Percent
                    )
                ],
                evaluations=evaluations,
                sites=_sites(slip.upper, slip.lower),
            )
        )
    for tissue in readout.soft_tissue:
        site = _site(tissue.level, codes.SCT.Anterior)
        groups.append(
            group(
                "soft-tissue",
                f"Prevertebral soft tissue {tissue.level}",
                finding=codes.SCT.SoftTissue,
                measurements=[
                    length(
                        tissue.thickness,
                        [site] if site is not None else [],
                        line(tissue.corner, tissue.airway),
                    )
                ],
            )
        )
    for flag in readout.flags:
        severity = SEVERITIES.get(flag.severity.lower())
        levels = flag.level.split("/")
        sites = _sites(*levels)
        if flag.kind == "soft_tissue":  # the swelling lies in front of the body
            sites = [s for s in (_site(level, codes.SCT.Anterior) for level in levels) if s]
        groups.append(
            group(
                f"flag-{flag.kind}",
                flag.text,
                finding=FLAG_FINDINGS.get(flag.kind, CLINICAL_FINDING),
                category=None,
                evaluations=(
                    [hd.sr.QualitativeEvaluation(codes.SCT.Severity, severity)]
                    if severity is not None
                    else []
                ),
                sites=sites,
            )
        )
    return groups


def impression_item(readout: ReadOut) -> hd.sr.TextContentItem | None:
    """The Impression (DCM 121073) of TID 1500's report-level Qualitative Evaluations:
    the read-out's sentence; None when it has none."""
    text = readout.impression.strip()
    if not text:
        return None
    return hd.sr.TextContentItem(
        name=codes.DCM.Impression,
        value=text,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def _code(label: str) -> Code | None:
    """The vertebra's code, None for a label that names none (a level's odd spelling)."""
    try:
        return vertebra_code(label.strip())
    except ValueError:
        return None


def _site(label: str, modifier: Code | None = None) -> hd.sr.FindingSite | None:
    code = _code(label)
    return None if code is None else hd.sr.FindingSite(code, topographical_modifier=modifier)


def _sites(*labels: str) -> list[hd.sr.FindingSite]:
    return [site for site in (_site(label) for label in labels) if site is not None]


def _region(label: str) -> Code:
    """The spine region of a Cobb span, from its upper vertebra's name."""
    return {
        "C": codes.SCT.CervicalSpine,
        "T": codes.SCT.ThoracicSpine,
        "L": codes.SCT.LumbarSpine,
    }.get(label[:1], codes.SCT.Spine)
