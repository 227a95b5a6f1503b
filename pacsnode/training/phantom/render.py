"""Turn a phantom scene into a radiograph: line integrals of attenuation, exponential
attenuation of an X-ray field, scatter, quantum and electronic noise, detector blur, and the
log / equalisation processing that makes a DX image "for presentation".

Pixel (row, col) covers [row, row + 1) x [col, col + 1) in pixel units from the top-left
corner of the image; scene millimetres divide by the spacing to give those units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import distance_transform_edt, gaussian_filter, zoom

from pacsnode.training.phantom.anatomy import Scene, Structure
from pacsnode.training.phantom.appearance import (
    Appearance,
    dress_scene,
    finish_display,
    grid_field,
    texture_band,
)
from pacsnode.training.phantom.geometry import polygon_mask

__all__ = ["Radiograph", "render"]

# Side-marker glyphs, 5 wide x 7 high.
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}
_COARSE_MM = 1.0  # grid for large smooth structures (soft tissue, lungs, skull)
_LEAD = 6.0  # attenuation of a lead marker letter


@dataclass(frozen=True)
class Radiograph:
    """A rendered film.

    Attributes
    ----------
    display
        Float32 image in [0, 1], bone bright, as a viewer would show it.
    spacing_mm
        Patient-plane size of a (square) pixel in mm.
    burned_in
        True when the side marker was burned into the pixels after processing.
    """

    display: NDArray[np.float32]
    spacing_mm: float
    burned_in: bool


def _chord(d: NDArray[np.float64], depth: float, radius: float) -> NDArray[np.float64]:
    """Path length (mm) through an object at in-plane depth ``d`` (mm) inside its outline."""
    u = np.clip(d / max(radius, 1e-6), 0.0, 1.0)
    return depth * np.sqrt(1.0 - (1.0 - u) ** 2)


def _add_structure(
    acc: NDArray[np.float64],
    s: Structure,
    spacing: float,
    rng: np.random.Generator,
    app: Appearance | None = None,
) -> None:
    pts = s.polygon / spacing
    rows, cols = acc.shape
    c0 = max(int(np.floor(pts[:, 0].min())) - 2, 0)
    r0 = max(int(np.floor(pts[:, 1].min())) - 2, 0)
    c1 = min(int(np.ceil(pts[:, 0].max())) + 2, cols)
    r1 = min(int(np.ceil(pts[:, 1].max())) + 2, rows)
    if c1 - c0 < 1 or r1 - r0 < 1:
        return
    mask = polygon_mask(pts - [c0, r0], (r1 - r0, c1 - c0))
    if not mask.any():
        return
    # Depth is measured to the outline; where the crop meets the image edge the structure
    # runs on beyond it, so the edge must not count as outline.
    at_edge = r0 == 0 or c0 == 0 or r1 == rows or c1 == cols
    padded = np.pad(mask, 1, mode="edge") if at_edge else np.pad(mask, 1)
    d = distance_transform_edt(padded)[1:-1, 1:-1] * spacing - 0.5 * spacing
    d = np.maximum(d, 0.0)
    if s.shell > 0:
        inner = _chord(d - s.shell, max(s.depth - 2 * s.shell, 0.0), max(s.radius - s.shell, 1e-3))
        outer = _chord(d, s.depth, s.radius)
        core = inner
        if s.texture > 0:
            core = inner * (1.0 + _texture(mask.shape, spacing, s.texture, rng, app))
        value = s.mu * core + s.shell_mu * (outer - inner)
    else:
        value = s.mu * _chord(d, s.depth, s.radius)
    acc[r0:r1, c0:c1] += np.where(mask, value, 0.0)


def _texture(
    shape: tuple[int, int],
    spacing: float,
    amount: float,
    rng: np.random.Generator,
    app: Appearance | None = None,
) -> NDArray[np.float64]:
    """Band-pass noise with a trabecular grain (~0.5-1.5 mm), weaker when pixels are coarse;
    an appearance family may make it coarse, anisotropic or absent."""
    noise = rng.standard_normal(shape)
    if app is not None:  # never classic: render() drops a classic appearance
        if app.texture == "none":
            return np.zeros(shape)
        band = texture_band(noise, spacing, app.texture)
        amount *= app.texture_amount
    else:
        band = gaussian_filter(noise, 0.35 / spacing) - gaussian_filter(noise, 1.2 / spacing)
    band /= max(float(band.std()), 1e-9)
    return amount * min(1.0, 0.5 / spacing) * band


def _marker_mask(
    letter: str, x: float, y: float, size: float, spacing: float, shape: tuple[int, int]
) -> NDArray[np.bool_]:
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    mask = np.zeros(shape, dtype=bool)
    h_px = max(round(size * 1.4 / spacing), 7)
    w_px = max(round(size / spacing), 5)
    r0, c0 = int(y / spacing), int(x / spacing)
    if r0 < 0 or c0 < 0 or r0 + h_px > shape[0] or c0 + w_px > shape[1]:
        return mask
    ri = (np.arange(h_px) * 7 // h_px)[:, None]
    ci = (np.arange(w_px) * 5 // w_px)[None, :]
    mask[r0 : r0 + h_px, c0 : c0 + w_px] = glyph[ri, ci]
    return mask


def render(
    scene: Scene,
    spacing_mm: float,
    rng: np.random.Generator,
    appearance: Appearance | None = None,
    appearance_rng: np.random.Generator | None = None,
) -> Radiograph:
    """Render ``scene`` on a square pixel grid of ``spacing_mm`` (patient plane).

    The same scene renders at any spacing: full detector resolution for a DICOM file, or a
    coarse grid for training, with noise scaled to the pixel area as a real detector would.
    ``appearance`` (default: classic) changes the bone, the overlap and the processing;
    ``appearance_rng`` draws its own randomness, so a classic film's pixels never change.
    """
    app = appearance if appearance is not None and not appearance.classic else None
    app_rng = appearance_rng if appearance_rng is not None else np.random.default_rng(0)
    if app is not None:
        scene = dress_scene(scene, app, app_rng)
    w_mm, h_mm = scene.size_mm
    shape = (max(round(h_mm / spacing_mm), 1), max(round(w_mm / spacing_mm), 1))
    coarse_spacing = max(spacing_mm, _COARSE_MM)
    coarse_shape = (
        max(round(h_mm / coarse_spacing), 1),
        max(round(w_mm / coarse_spacing), 1),
    )
    fine = np.zeros(shape)
    coarse = np.zeros(coarse_shape)
    for s in scene.structures:
        if s.coarse:
            _add_structure(coarse, s, coarse_spacing, rng, app)
        else:
            _add_structure(fine, s, spacing_mm, rng, app)
    # Air-filled structures subtract tissue; nothing attenuates less than empty space.
    attenuation = np.maximum(fine + _resample(coarse, shape), 0.0)

    ex = scene.exposure
    letter, mx, my, msize = scene.marker
    burned_in = bool(rng.random() < 0.3)
    marker = _marker_mask(letter, mx, my, msize, spacing_mm, shape)
    if not burned_in:
        attenuation[marker] += _LEAD

    # X-ray field: heel effect along a random anode-cathode axis, collimated outside a box
    # whose edges have a ~1 mm penumbra.
    xs = (np.arange(shape[1]) + 0.5) * spacing_mm
    ys = (np.arange(shape[0]) + 0.5) * spacing_mm
    heel_x = np.cos(ex["heel_angle"]) * (xs / w_mm - 0.5)
    heel_y = np.sin(ex["heel_angle"]) * (ys / h_mm - 0.5)
    x0, y0, x1, y1 = scene.collimation
    pen = max(1.2, spacing_mm)
    in_x = np.clip((xs - x0) / pen + 0.5, 0, 1) * np.clip((x1 - xs) / pen + 0.5, 0, 1)
    in_y = np.clip((ys - y0) / pen + 0.5, 0, 1) * np.clip((y1 - ys) / pen + 0.5, 0, 1)
    field = (1.0 + ex["heel"] * (heel_y[:, None] + heel_x[None, :])) * (
        0.02 + 0.98 * (in_y[:, None] * in_x[None, :])
    )

    # Exposure is set, as an AEC would, by the dose reaching the detector behind the body.
    pixel_area = spacing_mm * spacing_mm
    body_attenuation = float(np.median(_downsample(attenuation, coarse_shape)))
    photons = ex["photons_behind_body_per_mm2"] * pixel_area * float(np.exp(body_attenuation))
    if app is not None:
        photons /= app.noise**2  # fewer quanta, more noise; the log image is unchanged
        field = field * grid_field(shape, app, app_rng)
    primary = photons * field * np.exp(-attenuation)
    small = _downsample(primary, coarse_shape)
    scatter = ex["scatter_fraction"] * gaussian_filter(small, 25.0 / coarse_spacing)
    expected = primary + _resample(scatter, shape)
    counts = rng.poisson(expected).astype(np.float64)
    blur = ex["blur_mm"] / spacing_mm
    if blur >= 0.3:
        counts = gaussian_filter(counts, blur)
    counts += rng.normal(0.0, ex["electronic_noise"] * pixel_area / 0.0225, shape)

    # Processing for presentation: log, then compress the large-scale dynamic range.
    log_image = -np.log(np.maximum(counts, 0.5) / photons)
    if app is not None:
        if app.equalisation is None:
            app = replace(app, equalisation=ex["equalisation"])

        def smooth(img: NDArray[np.float64], sigma_mm: float) -> NDArray[np.float64]:
            if sigma_mm / spacing_mm < 6:  # small kernels on the film's own grid
                return gaussian_filter(img, sigma_mm / spacing_mm)
            small = gaussian_filter(_downsample(img, coarse_shape), sigma_mm / coarse_spacing)
            return _resample(small, shape)

        display = finish_display(log_image, spacing_mm, app, app_rng, smooth)
        if burned_in:
            display[marker] = 1.0
        return Radiograph(
            display=display.astype(np.float32), spacing_mm=spacing_mm, burned_in=burned_in
        )
    low = _resample(
        gaussian_filter(_downsample(log_image, coarse_shape), 15.0 / coarse_spacing), shape
    )
    processed = log_image - ex["equalisation"] * (low - float(np.median(low)))
    sample = processed[:: max(1, shape[0] // 400), :: max(1, shape[1] // 400)]
    lo, hi = np.percentile(sample, [0.5, 99.7])
    display = np.clip((processed - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if burned_in:
        display[marker] = 1.0
    return Radiograph(
        display=display.astype(np.float32), spacing_mm=spacing_mm, burned_in=burned_in
    )


def _resample(img: NDArray[np.float64], shape: tuple[int, int]) -> NDArray[np.float64]:
    """Linear resampling onto ``shape``, exactly that shape whatever zoom rounds to."""
    if img.shape == shape:
        return img
    factors = (shape[0] / img.shape[0], shape[1] / img.shape[1])
    img = zoom(img, factors, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1]]
    pad = ((0, shape[0] - img.shape[0]), (0, shape[1] - img.shape[1]))
    return np.pad(img, pad, mode="edge") if any(p[1] for p in pad) else img


def _downsample(img: NDArray[np.float64], shape: tuple[int, int]) -> NDArray[np.float64]:
    """Smooth away what the coarser grid cannot hold, then resample onto it."""
    if img.shape == shape:
        return img
    sigma = (0.5 * img.shape[0] / shape[0], 0.5 * img.shape[1] / shape[1])
    return _resample(gaussian_filter(img, sigma), shape)
