"""The semantic path's film-side helpers: CLAHE contrast normalisation before the
whole-spine UNet (as the thoracic UNet paper prepares its films), and the split of its
binary output into candidate vertebra masks by connected components.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import exposure

__all__ = ["candidate_masks", "contrast_normalise"]

_EIGHT = np.ones((3, 3), bool)


def contrast_normalise(
    image: NDArray[np.floating], *, tiles: int = 8, clip_limit: float = 0.01
) -> NDArray[np.float32]:
    """CLAHE of a (rows, cols) image in [0, 1]: the same film looks the same whatever its
    window, which the network then need not learn.

    Parameters
    ----------
    tiles
        Tiles across the shorter side; each tile's histogram is equalised.
    clip_limit
        scikit-image's clip limit (fraction of a tile's pixels per grey level).
    """
    if image.ndim != 2:
        raise ValueError(f"a film is 2-D (rows, cols), got shape {image.shape}")
    if tiles < 1:
        raise ValueError(f"tiles must be at least 1, got {tiles}")
    side = max(8, min(image.shape) // tiles)
    clipped = np.clip(np.asarray(image, np.float64), 0.0, 1.0)
    return exposure.equalize_adapthist(clipped, kernel_size=side, clip_limit=clip_limit).astype(
        np.float32
    )


def candidate_masks(mask: NDArray[np.bool_], min_area: int = 1) -> list[NDArray[np.bool_]]:
    """The connected components (8-connected) of a binary mask with at least ``min_area``
    pixels, largest first: the semantic path's C^u for the ensemble."""
    if mask.ndim != 2:
        raise ValueError(f"a mask is 2-D (rows, cols), got shape {mask.shape}")
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    order = np.argsort(-areas, kind="stable")
    return [labels == index + 1 for index in order if areas[index] >= min_area]
