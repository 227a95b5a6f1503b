"""A PNG of a film with its spine localisation drawn on it, for a person to check a result
at a glance (``pacsnode analyze --out DIR``); not a DICOM object and never sent.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from skimage.segmentation import find_boundaries

from pacsnode.export.regions import SPINE_COLOUR_RGB

if TYPE_CHECKING:  # the analysis stack imports torch; drawing needs only the result
    from pacsnode.analysis.localise import Localisation
    from pacsnode.analysis.reading import SpineReading

__all__ = [
    "BOX_COLOUR_RGB",
    "DEFAULT_MAX_SIDE",
    "GRADED_COLOUR_RGB",
    "VERTEBRA_COLOUR_RGB",
    "grey_picture",
    "render_overlay",
    "render_overlay_png",
]

BOX_COLOUR_RGB = (0, 200, 255)
VERTEBRA_COLOUR_RGB = (80, 255, 80)
GRADED_COLOUR_RGB = (255, 150, 0)
DEFAULT_MAX_SIDE = 1024
"""Longest side of the picture in pixels; larger films are shrunk to it."""

_TINT = 0.25  # how strongly the region is tinted, so the bone under it stays readable


def grey_picture(
    film_image: NDArray[np.floating], max_side: int | None
) -> tuple[Image.Image, float]:
    """The film (rows, cols) in [0, 1] as an 8-bit grey picture shrunk so that its longer
    side is at most ``max_side`` (None keeps its size), and the scale applied."""
    image = np.asarray(film_image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"a film is 2-D (rows, cols), got shape {image.shape}")
    rows, cols = image.shape
    scale = 1.0
    if max_side is not None and max(rows, cols) > max_side:
        scale = max_side / max(rows, cols)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))  # PIL: (width, height)
    grey = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    if size != (cols, rows):
        grey = grey.resize(size, Image.Resampling.BOX)
    return grey, scale


def render_overlay(
    film_image: NDArray[np.floating],
    localisation: Localisation,
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    reading: SpineReading | None = None,
) -> Image.Image:
    """The film in grey with the spine region tinted and outlined and its oriented box
    drawn, and each vertebra's outline with its label when a reading is given.

    Parameters
    ----------
    film_image
        (rows, cols) display image in [0, 1], bone bright (``Film.image``).
    localisation
        The localiser's result on that film: ``mask`` (rows, cols), ``box`` corners in
        (x = column, y = row) pixels from the top-left corner of the top-left pixel.
    max_side
        Shrink the picture so that its longer side is at most this many pixels; None
        keeps the film's size.
    reading
        The stack's vertebrae: outlines in :data:`VERTEBRA_COLOUR_RGB` (orange when a
        deformity is graded), labels beside their centroids, "?" after positional ones.

    Returns
    -------
    PIL.Image.Image
        An RGB picture; when nothing was found, the film alone, labelled so.
    """
    grey, scale = grey_picture(film_image, max_side)
    size = grey.size
    mask = np.asarray(localisation.mask, dtype=bool)
    if mask.shape != np.shape(film_image):
        raise ValueError(
            f"mask shape {mask.shape} does not match the film's {np.shape(film_image)}"
        )
    if size != (mask.shape[1], mask.shape[0]):
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    rgb = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=2)
    colour = np.asarray(SPINE_COLOUR_RGB, dtype=np.float32)
    rgb[mask] = (1.0 - _TINT) * rgb[mask] + _TINT * colour
    rgb[find_boundaries(mask, mode="inner")] = colour
    picture = Image.fromarray(np.rint(rgb).astype(np.uint8))

    draw = ImageDraw.Draw(picture)
    line = max(1, round(max(size) / 400))
    box = localisation.box
    if box is not None:
        # Corner coordinates scale exactly: their origin is the pixel corner, not centre.
        points = [(x * scale, y * scale) for x, y in box.corners]
        draw.line([*points, points[0]], fill=BOX_COLOUR_RGB, width=line)
    elif not mask.any():
        draw.text((4 * line, 4 * line), "no spine found", fill=(255, 64, 64))
    for vertebra in reading.vertebrae if reading is not None else ():
        graded = vertebra.finding is not None and vertebra.finding.grade > 0
        colour = GRADED_COLOUR_RGB if graded else VERTEBRA_COLOUR_RGB
        points = [(x * scale, y * scale) for x, y in vertebra.outline]
        draw.line([*points, points[0]], fill=colour, width=line)
        x, y = vertebra.centroid
        text = vertebra.label if vertebra.identified else f"{vertebra.label}?"
        draw.text((x * scale + 4 * line, y * scale), text, fill=colour)
    return picture


def render_overlay_png(
    film_image: NDArray[np.floating],
    localisation: Localisation,
    path: str | os.PathLike[str],
    *,
    max_side: int | None = DEFAULT_MAX_SIDE,
    reading: SpineReading | None = None,
) -> None:
    """Write :func:`render_overlay` of a film to ``path`` as a PNG."""
    picture = render_overlay(film_image, localisation, max_side=max_side, reading=reading)
    picture.save(path, format="PNG")
