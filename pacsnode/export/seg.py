"""The spine localisation of one film as a DICOM Segmentation (BINARY, one segment), in the
film's study and a series of its own, built with highdicom.

A projection film has no frame of reference: the SEG is 2-D, its one frame matching the
film pixel for pixel, and carries no plane positions (DICOM-NOTES).

An empty mask is refused with :class:`~pacsnode.errors.ExportError` rather than written
as a SEG with an empty segment. Such a SEG is valid DICOM, but the PACS would then hold a
"spine region" object that marks nothing, and a re-run that finds the spine would add a
second object rather than fill the first; "no spine found" belongs in the job's status
and the audit log, where it is acted on.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pacsnode.errors import ExportError
from pacsnode.export._source import PATIENT_PLANE, film_spacing, header_copy
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity
from pacsnode.export.regions import SPINE_COLOUR_RGB, SpineRegion, resolve_region
from pacsnode.export.uids import ExportKind, export_uids, name_based_uid
from pacsnode.imaging.reader import PixelSpacing

__all__ = [
    "SEGMENT_LABEL",
    "SEG_SERIES_DESCRIPTION",
    "SEG_SERIES_NUMBER",
    "SPINE_SEGMENT_NUMBER",
    "build_spine_seg",
    "spine_tracking_uid",
    "vertebra_code",
    "vertebra_tracking_uid",
]

SEG_SERIES_NUMBER = 9901
SEG_SERIES_DESCRIPTION = "pacsnode spine localisation"
SEGMENT_LABEL = "Spine region"
SPINE_SEGMENT_NUMBER = 1


def spine_tracking_uid(source_sop_instance_uid: str, model_version: str) -> str:
    """Tracking UID of the spine region on one film: the SEG segment's and the SR
    measurement group's that refers to it, so a reader can join the two."""
    return name_based_uid("tracking", "spine-region", str(source_sop_instance_uid), model_version)


# pydicom's SCT dictionary has C1 to L5 but no S1; 65985001 is SNOMED CT's "Structure of
# first sacral vertebra", as DICOM's CID 7151 lists it.
_S1_VERTEBRA = Code("65985001", "SCT", "S1 vertebra")
# A vertebra named only by its position on the film (no reference vertebra found).
_VERTEBRA = Code("51282000", "SCT", "Vertebra")


def vertebra_code(label: str) -> Code:
    """The SNOMED CT code of a vertebra label ("C2", "T12", "S1"); the generic Vertebra
    code for a positional label ("V3")."""
    if label == "S1":
        return _S1_VERTEBRA
    if label[:1] in ("C", "T", "L") and label[1:].isdigit():
        try:
            return getattr(codes.SCT, f"{label}Vertebra")
        except AttributeError:
            pass
        raise ValueError(f"{label!r} is not a vertebra")
    if label[:1] == "V" and label[1:].isdigit():
        return _VERTEBRA
    raise ValueError(f"{label!r} is not a vertebra label")


def vertebra_tracking_uid(source_sop_instance_uid: str, model_version: str, label: str) -> str:
    """Tracking UID of one vertebra on one film, shared by its SEG segment and SR group."""
    return name_based_uid(
        "tracking", "vertebra", label, str(source_sop_instance_uid), model_version
    )


def build_spine_seg(
    source: Dataset,
    localisation_mask: NDArray[np.bool_],
    *,
    algorithm: AlgorithmInfo,
    region: SpineRegion | str | None = None,
    spacing: PixelSpacing | None = None,
    node: NodeIdentity | None = None,
    series_number: int = SEG_SERIES_NUMBER,
    vertebrae: Sequence[tuple[str, NDArray[np.bool_]]] = (),
) -> hd.seg.Segmentation:
    """A BINARY Segmentation of the spine region on a single-frame film, and of each
    vertebra when given.

    Parameters
    ----------
    source
        The analysed film (its pixel data are not needed and the dataset is not changed).
    localisation_mask
        (rows, cols) boolean, True inside the spine region, on the film's own pixel grid.
    algorithm
        The model that made the mask; its version keys the UIDs.
    region
        The spine region the segment is typed as; by default read from the film's Body
        Part Examined (:func:`~pacsnode.export.regions.region_of_film`).
    spacing
        The film's pixel spacing (``Film.spacing``); read from the header when None.
        It is written as the SEG's Pixel Measures only when it holds in the patient
        (calibrated or magnification-corrected): detector spacing is left out rather
        than claimed as patient-plane spacing.
    node
        The node as equipment; defaults to :class:`NodeIdentity`.
    series_number
        Series Number of the new series.
    vertebrae
        ``(label, mask)`` per vertebra, head first: segments 2, 3, … labelled "C3" etc.
        and typed with the vertebra's SNOMED CT code (:func:`vertebra_code`). Labels must
        be unique; an empty vertebra mask is refused.

    Returns
    -------
    highdicom.seg.Segmentation
        Ready to save or send; its UIDs are :func:`~pacsnode.export.uids.export_uids` of
        the film and the algorithm version.

    Raises
    ------
    ExportError
        When the mask is empty (no spine was found) or the film lacks its UIDs.
    ValueError
        When the mask is not 2-D or does not match the film's Rows × Columns.
    """
    node = node or NodeIdentity()
    header = header_copy(source)
    mask = np.asarray(localisation_mask)
    shape = (int(header.Rows), int(header.Columns))
    if mask.ndim != 2 or mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the film's {shape}")
    if not mask.any():
        raise ExportError(
            f"no spine region on film {header.SOPInstanceUID}: an empty mask is not exported"
        )
    spine = resolve_region(source, region)
    spacing = film_spacing(source, spacing)
    # highdicom would copy the film's own Pixel Spacing, whatever plane it holds in.
    for keyword in ("PixelSpacing", "PixelSpacingCalibrationType"):
        if keyword in header:
            delattr(header, keyword)
    pixel_measures = None
    if spacing.basis in PATIENT_PLANE and spacing.row_mm and spacing.col_mm:
        pixel_measures = hd.PixelMeasuresSequence(
            pixel_spacing=(spacing.row_mm, spacing.col_mm), slice_thickness=None
        )

    uids = export_uids(header.SOPInstanceUID, algorithm.version, ExportKind.SEG)
    segment = hd.seg.SegmentDescription(
        segment_number=SPINE_SEGMENT_NUMBER,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=spine.code,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.seg_identification(),
        tracking_uid=spine_tracking_uid(header.SOPInstanceUID, algorithm.version),
        tracking_id=SEGMENT_LABEL,
        display_color=hd.color.CIELabColor.from_rgb(*SPINE_COLOUR_RGB),
    )
    descriptions = [segment]
    planes = [mask.astype(bool)]
    labels = [label for label, _ in vertebrae]
    if len(set(labels)) != len(labels):
        raise ValueError(f"vertebra labels must be unique, got {labels}")
    for number, (label, vertebra_mask) in enumerate(vertebrae, start=SPINE_SEGMENT_NUMBER + 1):
        plane = np.asarray(vertebra_mask, bool)
        if plane.shape != shape:
            raise ValueError(f"mask of {label} has shape {plane.shape}, the film {shape}")
        if not plane.any():
            raise ExportError(f"the mask of {label} is empty")
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=codes.SCT.AnatomicalStructure,
                segmented_property_type=vertebra_code(label),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm.seg_identification(),
                tracking_uid=vertebra_tracking_uid(header.SOPInstanceUID, algorithm.version, label),
                tracking_id=label,
            )
        )
        planes.append(plane)
    # One frame, one plane per segment: (frames, rows, cols, segments).
    pixel_array = np.stack(planes, axis=-1)[None] if vertebrae else mask.astype(bool)
    seg = hd.seg.Segmentation(
        source_images=[header],
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        **node.equipment,
        content_label="SPINE",
        content_description=SEG_SERIES_DESCRIPTION,
        pixel_measures=pixel_measures,
        series_description=SEG_SERIES_DESCRIPTION,
    )
    # highdicom leaves Patient Orientation out of a SEG without plane orientation; it is
    # Type 2C there (required when there is no Image Orientation), so copy it, or leave
    # it empty when the film has none.
    seg.PatientOrientation = header.get("PatientOrientation", "")
    return seg
