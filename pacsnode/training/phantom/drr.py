"""A second phantom renderer, independent of the 2-D one: a 3-D spine and its surroundings
projected by a point-source cone beam (a digitally reconstructed radiograph), then an X-ray
detector chain of its own. Truth outlines are the projected silhouettes of the bodies.

Image coordinates: (x, y) = (column, row) in mm or pixels from the top-left corner of the
top-left pixel, measured in the isocentre plane (the patient plane of the DICOM spacing).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.uid import UID
from scipy.ndimage import affine_transform, gaussian_filter, map_coordinates
from skimage.measure import find_contours

from pacsnode.training.phantom.anatomy import REGIONS, Scene, VertebraTruth
from pacsnode.training.phantom.appearance import (
    ALL_FAMILIES,
    RANDOMISED,
    Appearance,
    draw_appearance,
    finish_display,
    grid_field,
)
from pacsnode.training.phantom.drr_anatomy import (
    Column,
    Ellipsoid,
    Patient,
    VoxelSolid,
    build_patient,
    texture_tile,
    voxelise,
)
from pacsnode.training.phantom.findings import draw_findings, findings_rng
from pacsnode.training.phantom.generate import Phantom, _truth, draw_acquisition
from pacsnode.training.phantom.geometry import nearest_vertex, resample_closed, signed_area
from pacsnode.training.phantom.render import Radiograph

__all__ = [
    "NATIVE",
    "ConeBeam",
    "DrrPhantom",
    "RayGrid",
    "line_integrals",
    "make_drr_phantom",
]

NATIVE = "drr"
"""The DRR's own presentation (multi-band processing, a window anchored on the anatomy,
a film-like tone curve): the held-out family of this renderer, never trained on. Its
other families put the 2-D renderer's processing chains (:mod:`.appearance`) on the same
projected log image, so the networks can learn this renderer's geometry without its look."""

Array = NDArray[np.float64]

_DRR_ENTROPY = 0x445252  # "DRR": keeps these cases apart from the 2-D phantom's streams
MIN_SIDE_PX, MAX_SIDE_PX = 1000, 3000
_RAY_PITCH_MM = 0.25  # finest ray spacing; the film is interpolated up from it
_SILHOUETTE_PITCH_MM = 0.3  # ray spacing of the truth silhouettes (a pixel if coarser)
_COARSE_PITCH_MM = 1.5  # ray spacing for the ribs, pelvis, jaw and clavicles
_MAX_SAMPLES = 3_000_000  # trilinear samples per chunk of rays

# Attenuation (1/mm) at the spectrum's energies: water, and cortical bone's excess over water
# (NIST XCOM mass attenuation, ICRU cortical bone 1.92 g/cm3), aluminium filtration, and the
# absorption of a CsI scintillator.
_E_KEV = np.array([20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0])
_MU_WATER = np.array([0.0810, 0.0376, 0.0268, 0.0227, 0.0206, 0.0184, 0.0171, 0.0151])
_MU_BONE = np.array([0.768, 0.2556, 0.1278, 0.0814, 0.0604, 0.0428, 0.0356, 0.0284])
_MU_AL = np.array([0.929, 0.3044, 0.1534, 0.0994, 0.0750, 0.0545, 0.0460, 0.0372])
_ETA_CSI = np.array([1.0, 0.98, 0.97, 0.92, 0.83, 0.62, 0.46, 0.25])
_KVP = {"cervical": 70.0, "lumbar": 90.0, "chest": 110.0}
_LEAD_WATER_MM = 400.0  # a lead marker letter, as water

_GLYPHS = {  # side-marker letters, 5 wide by 7 high
    "L": ["11000", "11000", "11000", "11000", "11000", "11111", "11111"],
    "R": ["11110", "11011", "11011", "11110", "11100", "11010", "11011"],
}


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class ConeBeam:
    """A point source, the isocentre plane and the patient's pose.

    ``rotation`` maps patient directions to beam directions (beam x = image columns, y =
    rows, z from the source towards the detector); the patient point ``centre`` sits at the
    isocentre, the middle of the image. The detector lies ``sid_mm - sod_mm`` beyond it.
    """

    sid_mm: float
    sod_mm: float
    rotation: Array
    centre: Array
    width_mm: float
    height_mm: float

    @property
    def magnification(self) -> float:
        return self.sid_mm / self.sod_mm

    @property
    def source(self) -> Array:
        """The focal spot in patient coordinates."""
        return self.centre + self.rotation.T @ np.array([0.0, 0.0, -self.sod_mm])

    def project(self, points: Array) -> Array:
        """Patient points (N, 3) to image mm (N, 2) from the top-left corner."""
        b = (np.atleast_2d(points) - self.centre) @ self.rotation.T
        f = self.sod_mm / (self.sod_mm + b[:, 2])
        return np.stack([b[:, 0] * f + self.width_mm / 2, b[:, 1] * f + self.height_mm / 2], 1)

    def directions(self, x_mm: Array, y_mm: Array) -> Array:
        """Unit vectors (N, 3), in patient coordinates, from the source through the image
        points (x, y) mm of the isocentre plane."""
        d = np.stack(
            [
                np.ravel(x_mm) - self.width_mm / 2,
                np.ravel(y_mm) - self.height_mm / 2,
                np.full(np.size(x_mm), self.sod_mm),
            ],
            axis=1,
        )
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return d @ self.rotation


@dataclass(frozen=True)
class RayGrid:
    """Rays through pixel centres ((c + 0.5) * pitch, (r + 0.5) * pitch) mm."""

    pitch: float
    shape: tuple[int, int]

    def window(self, xy_mm: Array, margin: int = 1) -> tuple[slice, slice] | None:
        """Rows and columns of the pixels around the points ``xy_mm`` (N, 2)."""
        c0 = max(int(np.floor(xy_mm[:, 0].min() / self.pitch)) - margin, 0)
        c1 = min(int(np.ceil(xy_mm[:, 0].max() / self.pitch)) + margin, self.shape[1])
        r0 = max(int(np.floor(xy_mm[:, 1].min() / self.pitch)) - margin, 0)
        r1 = min(int(np.ceil(xy_mm[:, 1].max() / self.pitch)) + margin, self.shape[0])
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1)

    def centres(self, win: tuple[slice, slice]) -> tuple[Array, Array]:
        rows = (np.arange(win[0].start, win[0].stop) + 0.5) * self.pitch
        cols = (np.arange(win[1].start, win[1].stop) + 0.5) * self.pitch
        y, x = np.meshgrid(rows, cols, indexing="ij")
        return x, y


def _box_corners(lo: Array, hi: Array) -> Array:
    return np.array(
        [
            [(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]]
            for i in (0, 1)
            for j in (0, 1)
            for k in (0, 1)
        ]
    )


def _cast(
    beam: ConeBeam, grid: RayGrid, solid: VoxelSolid, volume: NDArray[np.float32], reduce: str
) -> tuple[tuple[slice, slice], NDArray[np.float32]] | None:
    """Line integrals (mm x value) or maxima of ``volume`` along the rays that cross it."""
    lo, hi = solid.bounds
    corners = solid.frame.to_patient(_box_corners(lo, hi))
    win = grid.window(beam.project(corners))
    if win is None:
        return None
    x, y = grid.centres(win)
    d = beam.directions(x, y)
    # Into the solid's voxel index space (per mm of path).
    to_idx = solid.frame.axes.T / solid.voxel
    s_idx = to_idx @ (beam.source - solid.frame.origin) - solid.lo / solid.voxel
    d_idx = d @ to_idx.T
    n = np.array(volume.shape, float)
    safe = np.where(np.abs(d_idx) < 1e-12, 1e-12, d_idx)
    t_a = (-0.5 - s_idx) / safe
    t_b = (n - 0.5 - s_idx) / safe
    t_lo = np.minimum(t_a, t_b).max(axis=1)
    t_hi = np.maximum(t_a, t_b).min(axis=1)
    hit = np.flatnonzero(t_hi > t_lo + 1e-6)
    out = np.zeros(d.shape[0], np.float32)
    if hit.size:
        length = t_hi[hit] - t_lo[hit]
        steps = max(int(np.ceil(length.max() / solid.voxel)), 1)
        dt_ray = length / steps
        k = (np.arange(steps) + 0.5).astype(np.float32)
        chunk = max(_MAX_SAMPLES // steps, 1)
        for i0 in range(0, hit.size, chunk):
            rays = hit[i0 : i0 + chunk]
            ts = (t_lo[rays, None] + k[None, :] * dt_ray[i0 : i0 + chunk, None]).astype(np.float32)
            coords = (
                s_idx[:, None, None].astype(np.float32)
                + d_idx[rays].T[:, :, None].astype(np.float32) * ts[None]
            )
            vals = map_coordinates(
                volume, coords.reshape(3, -1), order=1, mode="constant", cval=0.0, prefilter=False
            ).reshape(rays.size, steps)
            if reduce == "max":
                out[rays] = vals.max(axis=1)
            else:
                out[rays] = vals.sum(axis=1) * dt_ray[i0 : i0 + chunk]
    return win, out.reshape(x.shape)


def _ellipsoid_chords(beam: ConeBeam, d: Array, e: Ellipsoid) -> Array:
    o = ((beam.source - e.centre) @ e.axes) / e.radii
    dd = (d @ e.axes) / e.radii
    a = np.einsum("ij,ij->i", dd, dd)
    b = 2.0 * dd @ o
    c = float(o @ o) - 1.0
    disc = b * b - 4.0 * a * c
    return np.sqrt(np.maximum(disc, 0.0)) / a


def _column_chords(beam: ConeBeam, d: Array, col: Column) -> Array:
    s = beam.source
    t_mid = (col.cz - s[2]) / np.where(np.abs(d[:, 2]) < 1e-9, 1e-9, d[:, 2])
    y = s[1] + t_mid * d[:, 1]
    xi = (s[0] + t_mid * d[:, 0] - np.interp(y, col.ys, col.cx)) / np.interp(y, col.ys, col.ax)
    p = np.where(xi >= 0, col.p_front, col.p_back)
    half = np.interp(y, col.ys, col.az) * (1.0 - np.minimum(np.abs(xi), 1.0) ** p) ** (1.0 / p)
    inside = (y >= col.ys[0]) & (y <= col.ys[-1])
    return np.where(inside, 2.0 * half / np.abs(d[:, 2]), 0.0)


def line_integrals(
    beam: ConeBeam,
    grid: RayGrid,
    *,
    analytic: tuple[Ellipsoid | Column, ...] = (),
    solids: tuple[VoxelSolid, ...] = (),
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Water and bone path lengths (mm) through analytic solids and voxel solids, on the rays
    of ``grid``; returns (water, bone), each of ``grid.shape``."""
    water = np.zeros(grid.shape, np.float32)
    bone = np.zeros(grid.shape, np.float32)
    full = (slice(0, grid.shape[0]), slice(0, grid.shape[1]))
    lung = np.zeros(grid.shape, np.float32)
    heart = np.zeros(grid.shape, np.float32)
    for obj in analytic:
        if isinstance(obj, Ellipsoid):
            corners = _box_corners(-obj.radii, obj.radii) @ obj.axes.T + obj.centre
            win = grid.window(beam.project(corners))
            if win is None:
                continue
            x, y = grid.centres(win)
            chord = _ellipsoid_chords(beam, beam.directions(x, y), obj).reshape(x.shape)
        else:
            win = full
            x, y = grid.centres(win)
            chord = _column_chords(beam, beam.directions(x, y), obj).reshape(x.shape)
        if isinstance(obj, Ellipsoid) and obj.kind in ("lung", "heart"):
            (lung if obj.kind == "lung" else heart)[win] += chord
        elif obj.water:
            water[win] += obj.water * chord
        if obj.bone:
            bone[win] += obj.bone * chord
    # Lung tissue is a quarter as dense as water; the heart takes the place of lung.
    water -= 0.75 * np.maximum(lung - heart, 0.0)
    for solid in solids:
        got = _cast(beam, grid, solid, solid.density, "sum")
        if got is not None:
            bone[got[0]] += got[1]
    return water, bone


def _resample(img: NDArray, pitch_in: float, pitch_out: float, shape: tuple[int, int]) -> NDArray:
    """Resample an image of pixel centres (i + 0.5) * pitch_in onto (j + 0.5) * pitch_out."""
    ratio = pitch_out / pitch_in
    if ratio > 1.5:  # shrinking: smooth away what the coarse grid cannot hold
        img = gaussian_filter(img, 0.45 * ratio)
    return affine_transform(
        img, [ratio, ratio], offset=0.5 * ratio - 0.5, output_shape=shape, order=1, mode="nearest"
    )


# --------------------------------------------------------------------------------------------
# The detector chain


def _spectrum(kvp: float, al_mm: float) -> tuple[Array, Array, Array]:
    """Energy bins of a tungsten spectrum (Kramers) after filtration, weighted by the energy a
    scintillator absorbs; returns (weights, mu_water, mu_bone_excess)."""
    e = np.arange(17.5, kvp, 5.0)
    log_e = np.log(e)

    def interp(table: Array) -> Array:
        return np.exp(np.interp(log_e, np.log(_E_KEV), np.log(table)))

    mu_w = interp(_MU_WATER)
    mu_b = interp(_MU_BONE) - mu_w
    fluence = (kvp - e) / e * np.exp(-interp(_MU_AL) * al_mm)
    weight = fluence * e * np.interp(e, _E_KEV, _ETA_CSI)
    return weight / weight.sum(), mu_w, mu_b


def _transmission(water: NDArray, bone: NDArray, spectrum: tuple[Array, Array, Array]) -> NDArray:
    weight, mu_w, mu_b = spectrum
    out = np.zeros(water.shape, np.float64)
    for w_e, a, b in zip(weight, mu_w, mu_b, strict=True):
        out += w_e * np.exp(-a * water - b * bone)
    return out


def _smooth(img: NDArray, sigma_px: float) -> NDArray:
    """A wide Gaussian blur computed on a shrunken copy (it only keeps coarse detail)."""
    step = max(1, int(sigma_px / 3))
    if step == 1:
        return gaussian_filter(img, sigma_px)
    small_shape = (int(np.ceil(img.shape[0] / step)), int(np.ceil(img.shape[1] / step)))
    small = _resample(img, 1.0, float(step), small_shape)
    small = gaussian_filter(small, sigma_px / step)
    return _resample(small, float(step), 1.0, img.shape)


def _marker(letter: str, x: float, y: float, size: float, s: float, shape) -> NDArray[np.bool_]:
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    mask = np.zeros(shape, bool)
    h_px, w_px = max(round(size * 1.4 / s), 7), max(round(size / s), 5)
    r0, c0 = int(y / s), int(x / s)
    if r0 < 0 or c0 < 0 or r0 + h_px > shape[0] or c0 + w_px > shape[1]:
        return mask
    mask[r0 : r0 + h_px, c0 : c0 + w_px] = glyph[
        (np.arange(h_px) * 7 // h_px)[:, None], (np.arange(w_px) * 5 // w_px)[None, :]
    ]
    return mask


def _detect(
    water: NDArray,
    bone: NDArray,
    pitch: float,
    s: float,
    shape: tuple[int, int],
    beam: ConeBeam,
    ex: dict[str, float],
    collimation: tuple[float, float, float, float],
    marker: NDArray[np.bool_],
    burned_in: bool,
    region: str,
    spine: tuple[Array, Array],
    rng: np.random.Generator,
    app: tuple[Appearance, np.random.Generator] | None = None,
) -> NDArray[np.float32]:
    """Quanta through the patient to a processed, windowed display image (bone bright).

    ``spine`` is the projected spine (body centres in image mm, and the bodies' widths in
    mm): what the window is set on, as an exam-specific protocol would. With ``app`` (an
    appearance of the 2-D renderer's families and its own random stream), the log image
    goes through that family's processing chain instead of this renderer's own, and its
    noise and grid lines apply.
    """
    spectrum = _spectrum(_KVP[region], ex["filtration_mm_al"])
    primary = _transmission(np.maximum(water, 0.0), bone, spectrum)
    # Scatter through a grid: a broad halo growing with the water crossed.
    coarse_pitch = max(4.0, pitch)
    cshape = (
        max(int(np.ceil(water.shape[0] * pitch / coarse_pitch)), 1),
        max(int(np.ceil(water.shape[1] * pitch / coarse_pitch)), 1),
    )
    spr = ex["scatter"] * np.clip(_resample(water, pitch, coarse_pitch, cshape) / 200.0, 0, 2.5)
    halo = gaussian_filter(
        _resample(primary, pitch, coarse_pitch, cshape) * spr, 35.0 / coarse_pitch
    )
    signal = _resample(primary, pitch, s, shape) + _resample(halo, coarse_pitch, s, shape)
    # Focal-spot penumbra, as seen at the isocentre plane.
    penumbra = ex["focal_spot_mm"] * (beam.sid_mm - beam.sod_mm) / beam.sid_mm / 2.355
    if penumbra / s >= 0.3:
        signal = gaussian_filter(signal, penumbra / s)

    rows, cols = shape
    y = (np.arange(rows) + 0.5) * s - beam.height_mm / 2
    x = (np.arange(cols) + 0.5) * s - beam.width_mm / 2
    # Inverse square and obliquity (cos^3) of a point source, and the anode heel.
    cos3 = (beam.sod_mm / np.sqrt(beam.sod_mm**2 + y[:, None] ** 2 + x[None, :] ** 2)) ** 3
    ang = ex["heel_angle"]
    heel = 1.0 + ex["heel"] * (np.cos(ang) * x[None, :] + np.sin(ang) * y[:, None]) / max(
        beam.width_mm, beam.height_mm
    )
    x0, y0, x1, y1 = collimation
    pen = max(1.0, s)
    xs, ys = x + beam.width_mm / 2, y + beam.height_mm / 2
    open_x = np.clip((xs - x0) / pen + 0.5, 0, 1) * np.clip((x1 - xs) / pen + 0.5, 0, 1)
    open_y = np.clip((ys - y0) / pen + 0.5, 0, 1) * np.clip((y1 - ys) / pen + 0.5, 0, 1)
    shutter = 0.03 + 0.97 * open_y[:, None] * open_x[None, :]
    field = cos3 * heel * shutter
    if app is not None:
        field = field * grid_field(shape, app[0], app[1])
    if not burned_in:
        field = np.where(marker, field * np.exp(-_LEAD_WATER_MM * spectrum[1].min()), field)

    # Quanta: the exposure is set (as an AEC would) by the dose behind the spine.
    area = (s * beam.magnification) ** 2  # detector-plane pixel area
    centre = signal[rows // 3 : 2 * rows // 3, cols // 3 : 2 * cols // 3]
    behind = float(np.percentile(centre, 30))
    quanta = ex["quanta_per_mm2"] * area / max(behind, 1e-4)
    if app is not None:
        quanta /= app[0].noise ** 2  # fewer quanta, more noise; the log image is unchanged
    counts = rng.poisson(np.maximum(signal * field * quanta, 0.0)).astype(np.float32)
    # Scintillator: a sharp core and a long tail of light spread (glare).
    core = ex["psf_core_mm"] / (s * beam.magnification)
    if core >= 0.3:
        counts = gaussian_filter(counts, core)
    glare = ex["glare"]
    counts = (1 - glare) * counts + glare * _smooth(
        counts, ex["glare_mm"] / (s * beam.magnification)
    )
    counts += rng.normal(0.0, ex["electronic"] * np.sqrt(area / 0.0225), shape).astype(np.float32)

    # Flat-field correction removes the cos^3 fall-off but not all of the heel.
    flat = quanta * cos3 * (1.0 + 0.6 * (heel - 1.0))
    log_img = -np.log(np.maximum(counts, 0.5) / flat)
    blank = open_y[:, None] * open_x[None, :]
    if app is None:
        patient = (_resample(water, pitch, s, shape) > 30.0) & (shutter > 0.5)
        display = _present(log_img, s, ex, patient, spine, marker, burned_in)
    else:
        display = _finish(log_img, s, blank, marker if burned_in else None, *app)
    # Electronic shuttering: the processing blanks what the collimators covered.
    return (display * blank + ex["shutter_grey"] * (1.0 - blank)).astype(np.float32)


def _finish(
    log_img: NDArray,
    s: float,
    blank: NDArray,
    marker: NDArray[np.bool_] | None,
    app: Appearance,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """A 2-D family's processing chain on the projected log image. What the collimators
    covered is set to the open field's median first, so the window is set on the patient
    as the 2-D renderer's is (the shutter is blanked afterwards)."""
    open_field = blank > 0.5
    if open_field.any():
        log_img = np.where(open_field, log_img, float(np.median(log_img[open_field])))
    if app.equalisation is None:  # the 2-D renderer takes it from its exposure
        app = replace(app, equalisation=float(rng.uniform(0.3, 0.8)))
    display = finish_display(
        log_img.astype(np.float64), s, app, rng, lambda img, sigma_mm: _smooth(img, sigma_mm / s)
    )
    if marker is not None:
        display = np.where(marker, 1.0, display)
    return display.astype(np.float32)


def _present(
    log_img: NDArray,
    s: float,
    ex: dict[str, float],
    patient: NDArray[np.bool_],
    spine: tuple[Array, Array],
    marker: NDArray[np.bool_],
    burned_in: bool,
) -> NDArray[np.float32]:
    """Multi-band processing (range compression, companded mid-band contrast, a little edge
    gain), then a window anchored on the anatomy, as an exam protocol would set it: the
    bodies at one grey, the soft tissue beside them at another; air saturates black and
    the shoulders or the skull may saturate white, as on a processed film."""
    # The large-scale level is averaged over the patient only (normalised convolution), so
    # neither the air lowers it at the skin nor the body lifts the air: no halo.
    weight = patient.astype(np.float32)
    base = _smooth(log_img * weight, 20.0 / s) / np.maximum(_smooth(weight, 20.0 / s), 1e-3)
    mid = _smooth(log_img, max(0.8 / s, 0.5))
    detail = mid - base
    fine = log_img - mid
    step = (max(1, log_img.shape[0] // 400), max(1, log_img.shape[1] // 400))
    sub = (slice(None, None, step[0]), slice(None, None, step[1]))
    inside = patient[sub]
    # Distance of each sampled pixel from the nearest projected body centre, in widths.
    ys = (np.arange(inside.shape[0]) * step[0] + 0.5) * s
    xs = (np.arange(inside.shape[1]) * step[1] + 0.5) * s
    centres, widths = spine
    dist = np.full(inside.shape, np.inf)
    for (cx, cy), w in zip(centres, widths, strict=True):
        dist = np.minimum(dist, np.hypot(xs[None, :] - cx, ys[:, None] - cy) / w)
    if inside.sum() < 100:
        inside = np.ones_like(inside)
    sd = max(float(np.std(detail[sub][inside])), 1e-6)
    # Mid-band contrast: small differences raised, large ones (skin edges, shoulders) held
    # to a few standard deviations.
    companded = np.sign(detail) * 3.0 * sd * np.tanh(np.abs(detail / sd) ** ex["compand"] / 3.0)
    ref = float(np.median(base[sub][inside]))
    out = (1.0 - ex["compress"]) * (base - ref) + ex["mid_gain"] * companded
    out += ex["edge_gain"] * fine
    sample = out[sub]
    bodies = sample[(dist < 0.3) & inside]
    soft = sample[(dist > 1.3) & (dist < 2.3) & inside]
    if bodies.size < 10 or soft.size < 10:  # no spine in the field: the patient's range
        soft_level, body_level = np.percentile(sample[inside], [20.0, 95.0])
    else:
        soft_level, body_level = float(np.percentile(soft, 25.0)), float(np.median(bodies))
    # Bodies seen through the lungs can be darker than the soft tissue: the upper anchor is
    # at least the patient's 85th percentile, and the window at least a third of its range.
    p2, p85, p98 = np.percentile(sample[inside], [2.0, 85.0, 98.0])
    body_level = max(body_level, p85)
    soft_level = min(soft_level, body_level - max(0.35 * (p98 - p2), 1e-3))
    lo_grey, hi_grey = ex["soft_grey"], ex["body_grey"]
    x = lo_grey + (out - soft_level) * (hi_grey - lo_grey) / (body_level - soft_level)
    # A film-like tone curve: straight in the middle, rolling off into black and white.
    k = ex["tone_slope"]
    display = 0.5 + 0.5 * np.tanh(k * (x - 0.5)) / np.tanh(k * 0.5)
    if burned_in:
        display = np.where(marker, 1.0, display)
    return np.clip(display, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Truth


def _silhouette(beam: ConeBeam, grid: RayGrid, solid: VoxelSolid) -> NDArray[np.float64] | None:
    """The body's projected outline in image mm: the boundary of the rays that meet it."""
    assert solid.body is not None
    got = _cast(beam, grid, solid, solid.body, "max")
    if got is None:
        return None
    win, img = got
    contours = find_contours(np.pad(img, 1), 0.5)
    if not contours:
        return None
    c = max(contours, key=len)[:-1]
    rows = c[:, 0] - 1 + win[0].start
    cols = c[:, 1] - 1 + win[1].start
    poly = np.stack([(cols + 0.5) * grid.pitch, (rows + 0.5) * grid.pitch], axis=1)
    if signed_area(poly) < 0:
        poly = poly[::-1]
    return resample_closed(poly, 400)


def _vertebra_truth(
    patient: Patient, beam: ConeBeam, grid: RayGrid, solid: VoxelSolid
) -> VertebraTruth | None:
    v = next(v for v in patient.vertebrae if v.label == solid.label)
    dense = _silhouette(beam, grid, solid)
    if dense is None or len(dense) < 8:
        return None
    marks = v.shape.landmarks()
    pts = beam.project(v.frame.to_patient(np.array(list(marks.values()))))
    where = dict(zip(marks, pts, strict=True))
    snap = {k: nearest_vertex(dense, p) for k, p in where.items()}
    corners = {
        k: dense[snap[k]]
        for k in (
            "anterior_superior",
            "anterior_inferior",
            "posterior_inferior",
            "posterior_superior",
        )
    }
    # C2's superior midpoint is its endplate under the dens, inside the silhouette.
    mid_sup = where["mid_superior"] if v.shape.kind == "c2" else dense[snap["mid_superior"]]
    outline = resample_closed(dense, 64, start=snap["anterior_superior"])
    posterior = float(np.linalg.norm(corners["posterior_superior"] - corners["posterior_inferior"]))
    expected = v.nominal.height * posterior / v.shape.h_post
    return VertebraTruth(
        label=v.label,
        outline=outline,
        corners=corners,
        mid_superior=mid_sup,
        mid_inferior=dense[snap["mid_inferior"]],
        expected_height_mm=float(expected),
        fracture=v.fracture,
        osteophytes=v.osteophytes,
        disc_below_narrowed=v.narrowed,
    )


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class DrrPhantom(Phantom):
    """A DRR phantom: the :class:`Phantom` attributes, with the beam and the 3-D patient.

    ``scene`` holds the film's metadata and truth (its 2-D ``structures`` are empty: the
    anatomy is ``patient``).
    """

    beam: ConeBeam = field(kw_only=True)
    patient: Patient = field(kw_only=True)

    def dataset(self) -> Dataset:
        ds = super().dataset()
        # Its own UIDs and patient, so a DRR case never collides with the 2-D case of the
        # same (seed, index); and the geometry it was really projected with.
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, keyword, _uid(self.seed, self.index, keyword))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = f"DRR-{self.case_id}"
        ds.PatientName = f"PHANTOM^DRR-{self.case_id}"
        ds.AccessionNumber = f"DR{self.seed % 100000:05d}{self.index % 100000:05d}"
        ds.ManufacturerModelName = "synthetic phantom (DRR)"
        ds.SeriesDescription = "Lateral (DRR)"
        if "DistanceSourceToDetector" in ds:
            ds.DistanceSourceToDetector = f"{self.beam.sid_mm:.1f}"
            ds.DistanceSourceToPatient = f"{self.beam.sod_mm:.1f}"
        return ds


def _uid(seed: int, index: int, what: str) -> UID:
    name = f"pacsnode-phantom-drr|{seed}|{index}|{what}"
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")


def _pose(rng: np.random.Generator) -> tuple[str, float, float, float]:
    """Facing, in-plane rotation (deg), rotation about the long axis and tilt (rad)."""
    facing = "right" if rng.random() < 0.6 else "left"
    rotation = float(rng.normal(0.0, 6.0)) if rng.random() < 0.6 else float(rng.uniform(0, 360))
    axial = float(np.deg2rad(rng.uniform(0.0, 8.0)) * rng.choice([-1.0, 1.0]))
    tilt = float(np.deg2rad(np.clip(rng.normal(0.0, 1.2), -3.0, 3.0)))
    return facing, rotation % 360.0, axial, tilt


def _rotation(facing: str, rotation_deg: float, axial: float, tilt: float) -> Array:
    """Patient-to-beam rotation: tilt (about the AP axis), rotation about the long axis, a
    half turn about it for a patient facing left, then the in-plane rotation."""
    a = np.deg2rad(rotation_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
    flip = np.diag([-1.0, 1.0, -1.0]) if facing == "left" else np.eye(3)
    ry = np.array(
        [[np.cos(axial), 0, np.sin(axial)], [0, 1.0, 0], [-np.sin(axial), 0, np.cos(axial)]]
    )
    rx = np.array([[1.0, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    return rz @ flip @ ry @ rx


def make_drr_phantom(
    seed: int,
    index: int = 0,
    region: str = "mixed",
    *,
    size_px: int | None = None,
    appearance: str = NATIVE,
) -> DrrPhantom:
    """Make case ``index`` of the DRR phantom set ``seed``.

    Parameters
    ----------
    seed, index
        Identify the case; the same pair always gives the same patient, pose, acquisition
        and pixels.
    region
        "cervical", "lumbar", "chest", or "mixed" (drawn per case).
    size_px
        Render with the film's longest side at this many pixels (for training); by default
        at the detector pitch, as the DICOM file is written.
    appearance
        :data:`NATIVE` (default): this renderer's own processing, the held-out look; or
        one of the 2-D renderer's families (``"randomised"`` draws a training family per
        case), whose processing chain then presents the same projection. The patient,
        pose and acquisition do not depend on it.
    """
    if appearance != NATIVE and appearance not in (RANDOMISED, *ALL_FAMILIES):
        raise ValueError(
            f"unknown appearance {appearance!r}; expected {NATIVE!r}, {RANDOMISED!r} or one "
            f"of {ALL_FAMILIES}"
        )
    ss = np.random.SeedSequence([seed, index, _DRR_ENTROPY])
    # A fifth stream for the appearance: the first four (and so the native film) stay.
    anat_ss, acq_ss, noise_ss, tex_ss, app_ss = ss.spawn(5)
    app_rng = np.random.default_rng(app_ss)
    app = (
        Appearance(family=NATIVE) if appearance == NATIVE else draw_appearance(appearance, app_rng)
    )
    rng = np.random.default_rng(anat_ss)
    if region == "mixed":
        region = REGIONS[int(rng.integers(0, len(REGIONS)))]
    elif region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {(*REGIONS, 'mixed')}")
    # The read-out's findings draw from their own stream, apart from the 2-D phantom's.
    findings = draw_findings(findings_rng(seed, index, _DRR_ENTROPY), region)
    patient = build_patient(rng, region, findings)
    facing, rotation_deg, axial, tilt = _pose(rng)
    sid = float(rng.uniform(1000.0, 1800.0))
    oid = float(rng.uniform(150.0, 250.0))
    mag = round(sid / (sid - oid), 6)
    shift = float(rng.uniform(-8.0, 8.0))  # the mid-sagittal plane is rarely exactly there

    # The field: the sagittal box turned onto the detector, bounded.
    x0, y0, x1, y1 = patient.field_box
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    a = np.deg2rad(rotation_deg)
    turned = (box - box.mean(0)) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T
    size = np.minimum(turned.max(0) - turned.min(0), MAX_SIDE_PX * 0.2 / mag)
    size_mm, acq = draw_acquisition(
        np.random.default_rng(acq_ss), (float(size[0]), float(size[1])), mag
    )
    w_mm, h_mm = size_mm
    centre = np.array([*box.mean(0), shift])
    beam = ConeBeam(
        sid, sid / mag, _rotation(facing, rotation_deg, axial, tilt), centre, w_mm, h_mm
    )

    s = acq.patient_spacing_mm if size_px is None else max(w_mm, h_mm) / float(size_px)
    shape = (max(round(h_mm / s), 1), max(round(w_mm / s), 1))
    col = (
        (
            rng.uniform(0, 0.06) * w_mm,
            rng.uniform(0, 0.05) * h_mm,
            w_mm - rng.uniform(0, 0.06) * w_mm,
            h_mm - rng.uniform(0, 0.05) * h_mm,
        )
        if rng.random() < 0.7
        else (0.0, 0.0, w_mm, h_mm)
    )
    letter = "R" if rng.random() < 0.5 else "L"
    msize = float(rng.uniform(8.0, 14.0))
    mx = float(rng.choice([col[0] + 6, col[2] - 6 - msize]))
    my = float(rng.choice([col[1] + 6, col[3] - 6 - msize * 1.4]))
    ex = _exposure(rng, region)

    # Rays: fine for the spine, coarse for the ribs, pelvis and jaw; the film in between.
    f = max(1, int(np.ceil(_RAY_PITCH_MM / s)))
    pitch = f * s
    grid = RayGrid(pitch, (int(np.ceil(shape[0] / f)), int(np.ceil(shape[1] / f))))
    voxel = float(np.clip(1.4 * pitch, 0.45, 1.0))
    fc = max(1, int(np.ceil(_COARSE_PITCH_MM / s)))
    coarse_grid = RayGrid(fc * s, (int(np.ceil(shape[0] / fc)), int(np.ceil(shape[1] / fc))))
    fs = max(1, round(_SILHOUETTE_PITCH_MM / s))
    sil_grid = RayGrid(fs * s, (int(np.ceil(shape[0] / fs)), int(np.ceil(shape[1] / fs))))

    tile = texture_tile(np.random.default_rng(tex_ss), voxel)
    water, bone, truths = _project(
        patient, beam, (grid, coarse_grid, sil_grid), voxel, tile, (seed, index)
    )
    burned_in = bool(rng.random() < 0.3)
    marker = _marker(letter, mx, my, msize, s, shape)
    shown = [v for v in patient.vertebrae if v.label in truths]
    spine_xy = (
        beam.project(np.array([v.frame.origin for v in shown])) if shown else np.zeros((0, 2))
    )
    widths = np.array([v.shape.width for v in shown])
    display = _detect(
        water,
        bone,
        pitch,
        s,
        shape,
        beam,
        ex,
        col,
        marker,
        burned_in,
        region,
        (spine_xy, widths),
        np.random.default_rng(noise_ss),
        None if app.family == NATIVE else (app, app_rng),
    )

    vertebrae, partial = _in_field(patient, truths, col)
    scene = Scene(
        region=region,
        size_mm=(w_mm, h_mm),
        structures=[],
        vertebrae=vertebrae,
        partial=partial,
        facing=facing,
        rotation_deg=rotation_deg,
        collimation=col,
        marker=(letter, mx, my, msize),
        metal=False,
        osteoporotic=patient.osteoporotic,
        exposure=ex,
        # Where the rays graze the airway's posterior wall: its line on the plane the
        # airway is sampled on, projected (a straight segment stays straight).
        airway_wall=None if patient.airway_wall is None else beam.project(patient.airway_wall),
        findings=findings,
    )
    radiograph = Radiograph(display=display, spacing_mm=s, burned_in=burned_in)
    case_id = f"{seed}-{index:05d}"
    truth: dict[str, Any] = _truth(case_id, seed, index, scene, acq, radiograph)
    # The same keys as make_phantom's truth: "appearance" names the look, this renderer's
    # own detector chain (NATIVE) or the 2-D family whose processing presents it.
    truth["appearance"] = app.family
    truth["renderer"] = "drr"
    return DrrPhantom(
        case_id,
        seed,
        index,
        scene,
        acq,
        radiograph,
        truth,
        app,
        beam=beam,
        patient=patient,
    )


def _project(
    patient: Patient,
    beam: ConeBeam,
    grids: tuple[RayGrid, RayGrid, RayGrid],
    voxel: float,
    tile: NDArray[np.float32],
    case: tuple[int, int],
) -> tuple[NDArray[np.float32], NDArray[np.float32], dict[str, VertebraTruth]]:
    """Water and bone line integrals on the fine ray grid, and each body's truth.

    ``grids`` are the fine, coarse (ribs, pelvis, jaw) and silhouette ray grids. Solids are
    voxelised one at a time, only when their box projects into the film.
    """
    grid, coarse_grid, sil_grid = grids
    water, bone = line_integrals(beam, grid, analytic=patient.analytic)
    truths: dict[str, VertebraTruth] = {}
    for i, spec in enumerate(patient.solids):
        lo, hi = spec.bounds
        corners = beam.project(spec.frame.to_patient(_box_corners(lo, hi)))
        if (coarse_grid if spec.coarse else grid).window(corners) is None:
            continue
        # Each solid's texture has its own stream: skipping one changes no other.
        solid_rng = np.random.default_rng([*case, _DRR_ENTROPY, i])
        if spec.coarse:
            solid = voxelise(spec, float(np.clip(2.2 * voxel, 1.2, 2.0)), tile, solid_rng)
            _, b = line_integrals(beam, coarse_grid, solids=(solid,))
            bone += _resample(b, coarse_grid.pitch, grid.pitch, grid.shape)
            continue
        solid = voxelise(spec, voxel, tile, solid_rng)
        got = _cast(beam, grid, solid, solid.density, "sum")
        if got is not None:
            bone[got[0]] += got[1]
        if solid.body is not None and solid.label is not None:
            t = _vertebra_truth(patient, beam, sil_grid, solid)
            if t is not None:
                truths[solid.label] = t
    return water, bone, truths


def _in_field(
    patient: Patient, truths: dict[str, VertebraTruth], col: tuple[float, float, float, float]
) -> tuple[list[VertebraTruth], list[str]]:
    """The bodies wholly inside the collimated field (2 mm in), head first, and the labels
    of those the field edge cuts."""
    vertebrae, partial = [], []
    x0, y0, x1, y1 = col[0] + 2, col[1] + 2, col[2] - 2, col[3] - 2
    for v in patient.vertebrae:
        t = truths.get(v.label)
        if t is None:
            continue
        o = t.outline
        inside = (o[:, 0] >= x0) & (o[:, 0] <= x1) & (o[:, 1] >= y0) & (o[:, 1] <= y1)
        if inside.all():
            vertebrae.append(t)
        elif inside.any():
            partial.append(v.label)
    return vertebrae, partial


def _exposure(rng: np.random.Generator, region: str) -> dict[str, float]:
    return {
        "filtration_mm_al": float(rng.uniform(2.5, 4.0)),
        "scatter": float(
            rng.uniform(0.15, 0.35) if region == "cervical" else rng.uniform(0.3, 0.7)
        ),
        "focal_spot_mm": float(rng.uniform(0.6, 1.2)),
        "heel": float(rng.uniform(0.05, 0.25)),
        "heel_angle": float(rng.uniform(0, 2 * np.pi)),
        "quanta_per_mm2": float(rng.uniform(6000, 30000)),
        "psf_core_mm": float(rng.uniform(0.06, 0.14)),
        "glare": float(rng.uniform(0.05, 0.2)),
        "glare_mm": float(rng.uniform(0.8, 2.0)),
        "electronic": float(rng.uniform(1.0, 4.0)),
        "compress": float(rng.uniform(0.75, 0.9)),
        "compand": float(rng.uniform(0.6, 0.8)),
        "mid_gain": float(rng.uniform(1.0, 1.6)),
        "edge_gain": float(rng.uniform(0.9, 1.4)),
        "soft_grey": float(rng.uniform(0.22, 0.35)),
        "shutter_grey": float(rng.choice([0.0, 1.0, 1.0])),
        "body_grey": float(rng.uniform(0.6, 0.75)),
        "tone_slope": float(rng.uniform(1.5, 3.0)),
    }
