"""The vertebrae and the ER read-out of one film as a Grayscale Softcopy Presentation State:
graphics a viewer draws over the film itself, in the film's study and a series of its own.

One graphic layer per kind of mark (:mod:`pacsnode.export.marks`), so a viewer can show or
hide each: OUTLINES (vertebral bodies and their labels), BODY LINES (anterior and
posterior vertebral lines), MEASUREMENTS (Cobb endplates and angles, step-offs, soft
tissue) and FINDINGS (the critical findings and the impression). The film's window is
kept, and a MONOCHROME1 film gets an INVERSE presentation LUT, since a presentation
state's LUT replaces the film's own polarity (DICOM-NOTES).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from pacsnode.export._source import header_copy
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity
from pacsnode.export.marks import Layer, film_marks, place, text_height
from pacsnode.export.uids import ExportKind, export_uids

if TYPE_CHECKING:
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.reading import SpineReading

__all__ = [
    "GSPS_CONTENT_LABEL",
    "GSPS_SERIES_DESCRIPTION",
    "GSPS_SERIES_NUMBER",
    "build_spine_gsps",
    "displays_inverted",
]

GSPS_SERIES_NUMBER = 9903
GSPS_SERIES_DESCRIPTION = "pacsnode spine annotations"
GSPS_CONTENT_LABEL = "SPINE READOUT"


def displays_inverted(film: Dataset) -> bool:
    """Whether the film shows low values bright: MONOCHROME1, or an INVERSE Presentation
    LUT Shape (a DX pairs the two for one inversion, as the reader does)."""
    photometric = str(film.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(film.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def build_spine_gsps(
    source: Dataset,
    localisation: Localisation,
    *,
    algorithm: AlgorithmInfo,
    reading: SpineReading | None = None,
    node: NodeIdentity | None = None,
    series_number: int = GSPS_SERIES_NUMBER,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    """A presentation state of one film drawing what was found on it.

    Parameters
    ----------
    source
        The analysed film (pixel data not needed; not changed).
    localisation
        The localiser's result; its box is drawn when the reading has no vertebrae.
    algorithm
        The algorithm of the SEG and SR; its version keys the UIDs.
    reading
        The vertebrae and, when made, the read-out.
    node
        The node as equipment; defaults to :class:`NodeIdentity`.
    series_number
        Series Number of the new series.

    Raises
    ------
    ExportError
        When the film lacks its UIDs.
    """
    node = node or NodeIdentity()
    header = header_copy(source)
    rows, columns = int(header.Rows), int(header.Columns)
    layers = film_marks(rows, columns, localisation, reading)
    height = text_height(rows, columns)
    graphic_layers = []
    annotations = []
    for order, layer in enumerate(layers, start=1):
        graphic_layer = hd.pr.GraphicLayer(
            layer_name=layer.name,
            order=order,
            description=layer.description,
            display_color=hd.color.CIELabColor.from_rgb(*layer.colour),
        )
        graphic_layers.append(graphic_layer)
        annotations.append(_annotation(header, graphic_layer, layer, rows, columns, height))
    uids = export_uids(header.SOPInstanceUID, algorithm.version, ExportKind.GSPS)
    presentation = None
    if displays_inverted(header):
        presentation = hd.PresentationLUTTransformation(presentation_lut_shape="INVERSE")
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[header],
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        **node.equipment,
        content_label=GSPS_CONTENT_LABEL,
        content_description=f"{GSPS_SERIES_DESCRIPTION} ({algorithm.version})"[:64],
        graphic_annotations=annotations,
        graphic_layers=graphic_layers,
        presentation_lut_transformation=presentation,
        series_description=GSPS_SERIES_DESCRIPTION,
    )
    # Type 2C in the General Series module; highdicom leaves it out, and a spine is
    # unpaired, so it is empty unless the film says otherwise (DICOM-NOTES).
    gsps.Laterality = header.get("Laterality", "")
    return gsps


def _annotation(
    film: Dataset,
    graphic_layer: hd.pr.GraphicLayer,
    layer: Layer,
    rows: int,
    columns: int,
    height: float,
) -> hd.pr.GraphicAnnotation:
    graphics = [
        hd.pr.GraphicObject(
            graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
            graphic_data=np.asarray(line.points, np.float64),
            units=hd.pr.AnnotationUnitsValues.PIXEL,
        )
        for line in layer.lines
    ]
    texts = [
        hd.pr.TextObject(
            text_value=label.text,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            bounding_box=place(label, rows, columns, height),
            text_justification=(
                hd.pr.TextJustificationValues.LEFT
                if label.corner
                else hd.pr.TextJustificationValues.CENTER
            ),
        )
        for label in layer.labels
    ]
    return hd.pr.GraphicAnnotation(
        referenced_images=[film],
        graphic_layer=graphic_layer,
        graphic_objects=graphics or None,
        text_objects=texts or None,
    )
