"""Vertebra patches: a square window on the film centred on one vertebra, scaled and
turned so the spine runs down the patch, and the way back for the patch's mask.

Coordinates: film points are (x, y) in pixels with (0, 0) the top-left corner of the
top-left pixel, so pixel (row r, col c) has its centre at (c + 0.5, r + 0.5). Patch points
are (u, v) the same way; v runs along the spine from head to tail, u across it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["PATCH_MARGIN", "PATCH_SIZE", "PatchFrame", "normalise_patch"]

PATCH_SIZE = 64
"""Side of a vertebra patch, as in the shape-aware paper."""

PATCH_MARGIN = 1.6
"""Patch side over the vertebral body's larger extent: room for the whole body and a
sliver of its neighbours, as in the shape-aware paper's patches."""


def normalise_patch(patch: NDArray[np.floating]) -> NDArray[np.float32]:
    """Zero mean, unit standard deviation: the patch networks see contrast, not exposure."""
    p = np.asarray(patch, np.float32)
    return ((p - p.mean()) / max(float(p.std()), 1e-3)).astype(np.float32)


@dataclass(frozen=True)
class PatchFrame:
    """Where one patch lies on the film.

    Attributes
    ----------
    centre
        Film point (x, y) at the patch centre.
    axis
        The spine direction (x, y) at the centre, pointing from the head down; any
        length but zero.
    scale
        Film pixels per patch pixel.
    size
        Patch side in pixels (across the spine, u).
    length
        Patch rows along the spine (v); ``size`` when None (a square patch). The spine
        region frame of the semantic path and the detector is such a rectangle.
    """

    centre: tuple[float, float]
    axis: tuple[float, float]
    scale: float
    size: int = PATCH_SIZE
    length: int | None = None

    def __post_init__(self) -> None:
        if math.hypot(*self.axis) == 0.0:
            raise ValueError("the spine axis must not be the zero vector")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.size < 2 or self.rows < 2:
            raise ValueError(f"a patch is at least 2 pixels each way, got {self.shape}")

    @property
    def rows(self) -> int:
        """Pixels along the spine (v)."""
        return self.size if self.length is None else self.length

    @property
    def shape(self) -> tuple[int, int]:
        """(rows along the spine, columns across it) of the patch."""
        return self.rows, self.size

    def turned(self) -> PatchFrame:
        """The same window with the axis reversed: the patch turned by 180 degrees."""
        return PatchFrame(
            self.centre, (-self.axis[0], -self.axis[1]), self.scale, self.size, self.length
        )

    def scaled(self, factor: float) -> PatchFrame:
        """The same window on a film ``factor`` times larger (e.g. from a working image
        back to the film it was reduced from)."""
        return PatchFrame(
            (self.centre[0] * factor, self.centre[1] * factor),
            self.axis,
            self.scale * factor,
            self.size,
            self.length,
        )

    def _basis(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        ax, ay = self.axis
        norm = math.hypot(ax, ay)
        along = np.array([ax / norm, ay / norm])
        # Across the spine, turned so that axis (0, 1) gives u along +x: no mirroring.
        across = np.array([along[1], -along[0]])
        return across * self.scale, along * self.scale

    def to_film(self, u: NDArray[np.floating], v: NDArray[np.floating]) -> NDArray[np.float64]:
        """Film points (..., 2) as (x, y) of patch points (u, v)."""
        du, dv = self._basis()
        uu = np.asarray(u, np.float64)[..., None] - self.size / 2
        vv = np.asarray(v, np.float64)[..., None] - self.rows / 2
        return np.asarray(self.centre) + uu * du + vv * dv

    def to_patch(self, x: NDArray[np.floating], y: NDArray[np.floating]) -> NDArray[np.float64]:
        """Patch points (..., 2) as (u, v) of film points (x, y)."""
        du, dv = self._basis()
        inverse = np.linalg.inv(np.stack([du, dv], axis=1))  # columns map (u, v) to (x, y)
        offset = np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], -1)
        uv = (offset - np.asarray(self.centre)) @ inverse.T
        return uv + np.array([self.size / 2, self.rows / 2])

    def extract(self, image: NDArray[np.floating]) -> NDArray[np.float32]:
        """The (rows, size) patch of a (rows, cols) film, bilinear; zero off the film."""
        v, u = np.meshgrid(np.arange(self.rows) + 0.5, np.arange(self.size) + 0.5, indexing="ij")
        xy = self.to_film(u, v)
        coords = [xy[..., 1] - 0.5, xy[..., 0] - 0.5]  # (row, col) index coordinates
        out = ndimage.map_coordinates(
            np.asarray(image, np.float32), coords, order=1, mode="constant", cval=0.0
        )
        return out.astype(np.float32)

    def footprint(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """Film rows r0:r1 and columns c0:c1 that the patch can cover, clipped to ``shape``."""
        corners = self.to_film(
            np.array([0, self.size, 0, self.size]), np.array([0, 0, self.rows, self.rows])
        )
        c0, r0 = np.floor(corners.min(axis=0)).astype(int)
        c1, r1 = np.ceil(corners.max(axis=0)).astype(int)
        return max(r0, 0), min(r1, shape[0]), max(c0, 0), min(c1, shape[1])

    def mask_to_film(
        self, patch: NDArray[np.floating] | NDArray[np.bool_], shape: tuple[int, int]
    ) -> NDArray[np.bool_]:
        """A patch mask or probability map (:attr:`shape`) as a (rows, cols) film mask:
        each film pixel takes the bilinear patch value at its centre, kept at >= 0.5."""
        if patch.shape != self.shape:
            raise ValueError(f"patch shape {patch.shape} != {self.shape}")
        film = np.zeros(shape, bool)
        r0, r1, c0, c1 = self.footprint(shape)
        if r0 >= r1 or c0 >= c1:
            return film
        rows, cols = np.mgrid[r0:r1, c0:c1]
        uv = self.to_patch(cols + 0.5, rows + 0.5)
        values = ndimage.map_coordinates(
            np.asarray(patch, np.float32),
            [uv[..., 1] - 0.5, uv[..., 0] - 0.5],
            order=1,
            mode="constant",
            cval=0.0,
        )
        film[r0:r1, c0:c1] = values >= 0.5
        return film
