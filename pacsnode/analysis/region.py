"""The spine region frame that the semantic UNet and the vertebra detector look through,
and the working image it is cut from.

Films arrive at 1,000-3,000 px a side; the vertebra networks were trained on films with
their long side at :data:`WORKING_SIDE` pixels. Every film is first reduced to that
working image (antialiased), so a vertebra is the size the networks know. The localiser's
oriented box then gives the region frame: a :data:`REGION_ALONG` x :data:`REGION_ACROSS`
window turned so that the spine runs down its rows. Which end of the box is the head is
not known from the box: the detector says it (each detection carries the head-to-tail
direction), and the identifier confirms it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from pacsnode.analysis.lowres import OrientedBox
from pacsnode.analysis.patches import PatchFrame
from pacsnode.analysis.segment import contrast_normalise

__all__ = [
    "ACROSS_MARGIN",
    "ALONG_MARGIN",
    "REGION_ACROSS",
    "REGION_ALONG",
    "WORKING_SIDE",
    "normalise_region",
    "region_frame",
    "working_image",
]

WORKING_SIDE = 800
"""Long side of the working image, the phantoms' training render size."""

REGION_ALONG, REGION_ACROSS = 384, 128
"""Region frame rows (along the spine) and columns (across it). 384 rows over a lumbar
region of about 250 mm is 0.65 mm a pixel: a 9 mm disc is 14 pixels, an endplate is seen."""

ALONG_MARGIN = 0.12
"""Added at each end of the localised box, as a fraction of its length: the end
vertebrae and their context (skull base, sacrum) stay inside the frame."""

ACROSS_MARGIN = 0.35
"""Added on each side across the box, as a fraction of its width."""


def working_image(image: NDArray[np.floating]) -> tuple[NDArray[np.float32], float]:
    """The film reduced (antialiased bilinear) so that its long side is at most
    :data:`WORKING_SIDE`, and the factor from working to film pixels (>= 1)."""
    if image.ndim != 2:
        raise ValueError(f"a film is 2-D (rows, cols), got shape {image.shape}")
    rows, cols = image.shape
    factor = max(rows, cols) / WORKING_SIDE
    if factor <= 1.0:
        return np.asarray(image, np.float32), 1.0
    size = (max(1, round(rows / factor)), max(1, round(cols / factor)))
    t = torch.as_tensor(np.asarray(image, np.float32))[None, None]
    small = F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False)
    # The exact factor per axis differs by rounding; the mean is within half a pixel.
    factor = (rows / size[0] + cols / size[1]) / 2
    return small[0, 0].numpy(), factor


def region_frame(box: OrientedBox, *, factor: float = 1.0) -> PatchFrame:
    """The region frame on the working image of the spine box found on the film.

    Parameters
    ----------
    box
        The localiser's oriented box in film pixels.
    factor
        Film pixels per working pixel (:func:`working_image`).

    The frame's axis is the box's long axis pointing down the image (or to the right for
    a horizontal box); the scale keeps the aspect of the box plus margins.
    """
    angle = math.radians(box.angle_deg)
    axis = (math.cos(angle), math.sin(angle))
    length = box.length * (1 + 2 * ALONG_MARGIN) / factor
    width = box.width * (1 + 2 * ACROSS_MARGIN) / factor
    scale = max(length / REGION_ALONG, width / REGION_ACROSS, 1e-3)
    centre = (box.centre[0] / factor, box.centre[1] / factor)
    return PatchFrame(centre, axis, scale, REGION_ACROSS, REGION_ALONG)


def normalise_region(region: NDArray[np.floating]) -> NDArray[np.float32]:
    """CLAHE (the thoracic UNet paper's preparation), then zero mean and unit standard
    deviation: the networks' input."""
    equalised = contrast_normalise(np.clip(region, 0.0, 1.0))
    return ((equalised - equalised.mean()) / max(float(equalised.std()), 1e-3)).astype(np.float32)
