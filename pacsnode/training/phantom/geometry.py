"""Polygon helpers for the phantom scene: shapes, smoothing, resampling, transforms.

All polygons are float arrays of shape (N, 2) in (x, y) order, closed implicitly (the first
point is not repeated). Units are whatever the caller uses: the scene works in millimetres.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d
from skimage import draw

Polygon = NDArray[np.float64]

__all__ = [
    "Polygon",
    "arc_band",
    "ellipse",
    "nearest_vertex",
    "polygon_mask",
    "resample_closed",
    "signed_area",
    "similarity",
    "smooth_closed",
    "thick_polyline",
]


def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 64) -> Polygon:
    """Return an ellipse centred at (cx, cy) with radii (rx, ry), rotated by ``angle`` rad."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return pts @ rot.T + np.array([cx, cy])


def polygon_mask(pts: NDArray[np.float64], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """(rows, cols) mask of the pixels whose centre lies inside the polygon ``pts``, given in
    (x, y) pixel units from the top-left corner of the top-left pixel."""
    # scikit-image tests pixel (r, c) at integer coordinates; our centres sit at +0.5. (PIL's
    # polygon fill, used before, also takes pixels the edge merely touches: half a pixel wide.)
    rr, cc = draw.polygon(pts[:, 1] - 0.5, pts[:, 0] - 0.5, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    return mask


def signed_area(poly: Polygon) -> float:
    """Shoelace area; positive when the points run clockwise on screen (y pointing down)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def smooth_closed(poly: Polygon, sigma_points: float) -> Polygon:
    """Gaussian-smooth a densely sampled closed curve along its length (rounds corners)."""
    if sigma_points <= 0:
        return poly.copy()
    return np.stack(
        [gaussian_filter1d(poly[:, k], sigma_points, mode="wrap") for k in range(2)], axis=1
    )


def resample_closed(poly: Polygon, n: int, start: int = 0) -> Polygon:
    """Resample a closed curve to ``n`` points equally spaced by arc length.

    The first output point is the input point with index ``start``.
    """
    pts = np.roll(poly, -start, axis=0)
    closed = np.vstack([pts, pts[:1]])
    seg = np.hypot(*np.diff(closed, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    targets = np.linspace(0.0, s[-1], n, endpoint=False)
    return np.stack([np.interp(targets, s, closed[:, k]) for k in range(2)], axis=1)


def nearest_vertex(poly: Polygon, point: NDArray[np.float64]) -> int:
    """Index of the polygon vertex nearest to ``point``."""
    return int(np.argmin(np.hypot(*(poly - point).T)))


def similarity(
    pts: NDArray[np.float64],
    *,
    centre: NDArray[np.float64],
    angle: float,
    mirror_x: bool,
    to: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Mirror (optional) and rotate ``pts`` about ``centre`` by ``angle`` rad, then move
    ``centre`` to ``to``. On screen (y down) a positive angle turns clockwise."""
    p = pts - centre
    if mirror_x:
        p = p * np.array([-1.0, 1.0])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return p @ rot.T + to


def thick_polyline(path: NDArray[np.float64], width: float | NDArray[np.float64]) -> Polygon:
    """Turn an open path into a closed band polygon of the given (possibly varying) width."""
    d = np.gradient(path, axis=0)
    d /= np.maximum(np.hypot(*d.T), 1e-9)[:, None]
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    half = np.broadcast_to(np.asarray(width, dtype=float) / 2.0, (len(path),))[:, None]
    return np.vstack([path + normal * half, (path - normal * half)[::-1]])


def arc_band(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    t0: float,
    t1: float,
    width: float,
    n: int = 48,
) -> Polygon:
    """A band of ``width`` following an elliptical arc from parameter ``t0`` to ``t1`` rad."""
    t = np.linspace(t0, t1, n)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    c, s = np.cos(angle), np.sin(angle)
    path = pts @ np.array([[c, -s], [s, c]]).T + np.array([cx, cy])
    taper = width * (0.6 + 0.4 * np.sin(np.linspace(0.0, np.pi, n)))
    return thick_polyline(path, taper)
