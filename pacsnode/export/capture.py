"""The film with the vertebrae and the ER read-out burned into its pixels, as an RGB
Secondary Capture, for viewers that draw no presentation state; labelled derived and not
for diagnosis, in its header and in the picture itself.

It draws the same marks as the GSPS (:mod:`pacsnode.export.marks`) over the film in grey,
shrunk so that its longer side is at most :data:`DEFAULT_MAX_SIDE`, and carries no pixel
spacing: it is a picture to look at, not to measure on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pacsnode.export._source import header_copy
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity
from pacsnode.export.marks import film_marks, place, text_height
from pacsnode.export.overlay import grey_picture
from pacsnode.export.uids import ExportKind, export_uids

if TYPE_CHECKING:
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.reading import SpineReading

__all__ = [
    "DEFAULT_MAX_SIDE",
    "NOT_FOR_DIAGNOSIS",
    "SC_SERIES_DESCRIPTION",
    "SC_SERIES_NUMBER",
    "build_spine_capture",
    "render_capture",
]

SC_SERIES_NUMBER = 9904
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSIS"
SC_SERIES_DESCRIPTION = f"pacsnode annotated copy - {NOT_FOR_DIAGNOSIS}"
DEFAULT_MAX_SIDE = 2048
"""Longest side of the picture in pixels: a film's full size in RGB would be three times
its own bytes for a picture nobody measures on."""

_BANNER = f"{NOT_FOR_DIAGNOSIS} - derived image, automated annotations (pacsnode)"
_BANNER_RGB = (255, 255, 255)
_BANNER_BACK_RGB = (160, 0, 0)


def render_capture(
    film_image: NDArray[np.floating],
    localisation: Localisation,
    reading: SpineReading | None,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> Image.Image:
    """The film in grey with every mark drawn in its layer's colour and a
    "NOT FOR DIAGNOSIS" line along the bottom.

    Parameters
    ----------
    film_image
        (rows, cols) display image in [0, 1], bone bright (``Film.image``).
    localisation, reading
        What was found on the film (:func:`~pacsnode.export.marks.film_marks`).
    max_side
        Shrink the picture so that its longer side is at most this; None keeps the film's
        size.
    """
    grey, scale = grey_picture(film_image, max_side)
    rows, columns = np.shape(film_image)
    size = grey.size
    picture = grey.convert("RGB")
    draw = ImageDraw.Draw(picture)
    height = text_height(rows, columns)
    font = ImageFont.load_default(size=max(8.0, height * scale))
    width = max(1, round(max(size) / 500))
    for layer in film_marks(rows, columns, localisation, reading):
        for line in layer.lines:
            # Film coordinates scale exactly: their origin is a pixel's corner, not centre.
            draw.line(
                [(x * scale, y * scale) for x, y in line.points], fill=layer.colour, width=width
            )
        for label in layer.labels:
            left, top, _, _ = place(label, rows, columns, height)
            draw.text((left * scale, top * scale), label.text, fill=layer.colour, font=font)
    _banner(draw, font, size, height * scale)
    return picture


def _banner(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    size: tuple[int, int],
    height: float,
) -> None:
    """The "NOT FOR DIAGNOSIS" line on a red band across the bottom of the picture."""
    band = round(1.6 * height)
    top = max(0, size[1] - band)
    margin = round(0.5 * height)
    # The whole sentence where it fits, else the three words that matter.
    text = (
        _BANNER
        if draw.textlength(_BANNER, font=font) + 2 * margin <= size[0]
        else NOT_FOR_DIAGNOSIS
    )
    draw.rectangle([(0, top), (size[0], size[1])], fill=_BANNER_BACK_RGB)
    draw.text((margin, top + round(0.3 * height)), text, fill=_BANNER_RGB, font=font)


def build_spine_capture(
    source: Dataset,
    film_image: NDArray[np.floating],
    localisation: Localisation,
    *,
    algorithm: AlgorithmInfo,
    reading: SpineReading | None = None,
    node: NodeIdentity | None = None,
    series_number: int = SC_SERIES_NUMBER,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> hd.sc.SCImage:
    """A Secondary Capture of :func:`render_capture`, in the film's study and a series of
    its own, with Image Type DERIVED\\SECONDARY and Burned In Annotation YES.

    Parameters
    ----------
    source
        The analysed film's header (not changed).
    film_image
        Its display image (``Film.image``).
    algorithm
        The algorithm of the SEG and SR; its version keys the UIDs.
    """
    node = node or NodeIdentity()
    header = header_copy(source)
    picture = render_capture(film_image, localisation, reading, max_side=max_side)
    uids = export_uids(header.SOPInstanceUID, algorithm.version, ExportKind.SC)
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=header,
        pixel_array=np.asarray(picture, dtype=np.uint8),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=uids.series_instance_uid,
        series_number=series_number,
        sop_instance_uid=uids.sop_instance_uid,
        instance_number=1,
        **node.equipment,
        # Replaced by the film's own below: highdicom takes only single letters here.
        patient_orientation=("A", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SC_SERIES_DESCRIPTION,
    )
    capture.PatientOrientation = header.get("PatientOrientation", "")
    capture.Laterality = header.get("Laterality", "")
    capture.BurnedInAnnotation = "YES"
    capture.DerivationDescription = (
        f"The film with automated annotations burned in; {NOT_FOR_DIAGNOSIS.lower()}"
    )
    return capture
