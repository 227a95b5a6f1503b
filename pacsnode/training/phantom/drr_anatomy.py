"""Three-dimensional anatomy of the DRR phantom: vertebrae and their surroundings as solids
in millimetres, voxelised on demand for the ray caster in :mod:`.drr`.

Patient frame: x anterior, y inferior (towards the feet), z lateral; the mid-sagittal plane is
z = 0. A vertebra's local frame (a, h, l) has a anterior, h inferior along the spine and l
lateral. Bone is stored as millimetres of cortical-bone excess over water per millimetre of
path; soft tissue, lungs and air are analytic solids measured in millimetres of water.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from pacsnode.training.phantom.anatomy import (
    DIMENSIONS,
    PREVERTEBRAL_DEFAULT_MM,
    REGIONS,
    SPINE_ORDER,
    chain_labels,
)
from pacsnode.training.phantom.findings import NO_FINDINGS, Findings, Translation

__all__ = [
    "BodyShape",
    "Column",
    "Ellipsoid",
    "Frame",
    "Patient",
    "SolidSpec",
    "Vertebra",
    "VoxelSolid",
    "build_patient",
    "voxelise",
]

Array = NDArray[np.float64]

# Bone-channel densities: cortical bone is 1 by definition; cancellous bone is a fraction.
CORTICAL = 1.0
CANCELLOUS = 0.19
DISC = 0.03  # annulus and nucleus are a little denser than the fat and muscle around them
FRACTURE_TYPES = ("wedge", "crush")


# --------------------------------------------------------------------------------------------
# Frames and grids


@dataclass(frozen=True)
class Frame:
    """A rigid local frame: ``origin`` in patient mm, ``axes`` columns = local unit vectors."""

    origin: Array
    axes: Array

    def to_patient(self, local: Array) -> Array:
        return self.origin + np.atleast_2d(local) @ self.axes.T

    def to_local(self, patient: Array) -> Array:
        return (np.atleast_2d(patient) - self.origin) @ self.axes


IDENTITY = Frame(np.zeros(3), np.eye(3))


def _rot_about(axis: int, angle: float) -> Array:
    """Rotation matrix about local axis 0, 1 or 2 by ``angle`` rad (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


@dataclass(frozen=True)
class _Grid:
    lo: Array  # local coordinates of the centre of voxel (0, 0, 0)
    voxel: float
    shape: tuple[int, int, int]

    def block(self, lo: Array, hi: Array):
        """Slices of the voxels whose centres lie in [lo, hi], with their broadcast coords."""
        i0 = np.maximum(np.floor((lo - self.lo) / self.voxel).astype(int), 0)
        i1 = np.minimum(np.ceil((hi - self.lo) / self.voxel).astype(int) + 1, self.shape)
        if np.any(i1 <= i0):
            return None
        axes = [
            (self.lo[k] + self.voxel * np.arange(i0[k], i1[k])).astype(np.float32) for k in range(3)
        ]
        sl = tuple(slice(int(i0[k]), int(i1[k])) for k in range(3))
        return sl, axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


@dataclass
class _Canvas:
    """Union accumulators of one solid: outer and inner (cancellous) bone occupancy, disc
    occupancy and the truth body's occupancy."""

    grid: _Grid
    outer: NDArray[np.float32]
    inner: NDArray[np.float32]
    disc: NDArray[np.float32] | None = None
    body: NDArray[np.float32] | None = None


# --------------------------------------------------------------------------------------------
# Parts: implicit solids with an approximate signed distance (mm, negative inside)


class Part(Protocol):
    lo: Array
    hi: Array

    def paint(self, canvas: _Canvas) -> None: ...


def _occupancy(d, voxel: float):
    # A linear ramp one voxel wide centred on the surface: trilinear sampling keeps edges
    # sub-voxel accurate, and a maximum along a ray is 0.5 exactly where it grazes the surface.
    return np.clip(0.5 - d / voxel, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _SdfPart(ABC):
    """Base of the parts described by a signed distance function."""

    lo: Array
    hi: Array
    shell: float  # cortical thickness (mm); the rest is cancellous
    channel: str = "bone"  # "bone", "body" (bone that is also the truth body) or "disc"

    @abstractmethod
    def sdf(self, a, h, lat):
        """Signed distance (mm, negative inside) at anterior, height and lateral coordinates."""

    def paint(self, canvas: _Canvas) -> None:
        g = canvas.grid
        blk = g.block(self.lo - g.voxel, self.hi + g.voxel)
        if blk is None:
            return
        sl, a, h, lat = blk
        d = np.broadcast_to(self.sdf(a, h, lat), tuple(s.stop - s.start for s in sl))
        occ = _occupancy(d, g.voxel)
        if self.channel == "disc":
            assert canvas.disc is not None
            np.maximum(canvas.disc[sl], occ, out=canvas.disc[sl])
            return
        np.maximum(canvas.outer[sl], occ, out=canvas.outer[sl])
        np.maximum(canvas.inner[sl], _occupancy(d + self.shell, g.voxel), out=canvas.inner[sl])
        if self.channel == "body" and canvas.body is not None:
            np.maximum(canvas.body[sl], occ, out=canvas.body[sl])


@dataclass(frozen=True)
class Capsule(_SdfPart):
    p0: Array = field(default_factory=lambda: np.zeros(3))
    p1: Array = field(default_factory=lambda: np.zeros(3))
    r0: float = 1.0
    r1: float = 1.0

    @classmethod
    def of(cls, p0, p1, r0: float, r1: float | None = None, shell: float = 1.0) -> Capsule:
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        r1 = r0 if r1 is None else r1
        rmax = max(r0, r1)
        lo, hi = np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax
        return cls(lo=lo, hi=hi, shell=shell, p0=p0, p1=p1, r0=r0, r1=r1)

    def sdf(self, a, h, lat):
        ba = self.p1 - self.p0
        pa = (a - self.p0[0], h - self.p0[1], lat - self.p0[2])
        t = np.clip((pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) / float(ba @ ba), 0, 1)
        dist = np.sqrt(
            (pa[0] - t * ba[0]) ** 2 + (pa[1] - t * ba[1]) ** 2 + (pa[2] - t * ba[2]) ** 2
        )
        return dist - (self.r0 + t * (self.r1 - self.r0))


@dataclass(frozen=True)
class Box(_SdfPart):
    """A rounded box: ``centre``, ``axes`` (columns = box axes in local coords), half sizes."""

    centre: Array = field(default_factory=lambda: np.zeros(3))
    axes: Array = field(default_factory=lambda: np.eye(3))
    half: Array = field(default_factory=lambda: np.ones(3))
    rounding: float = 1.0

    @classmethod
    def of(cls, centre, half, *, axes=None, rounding: float = 1.0, shell: float = 1.0) -> Box:
        centre, half = np.asarray(centre, float), np.asarray(half, float)
        axes = np.eye(3) if axes is None else np.asarray(axes, float)
        ext = np.abs(axes) @ half
        return cls(
            lo=centre - ext,
            hi=centre + ext,
            shell=shell,
            centre=centre,
            axes=axes,
            half=half,
            rounding=min(rounding, float(half.min()) * 0.95),
        )

    def sdf(self, a, h, lat):
        p = (a - self.centre[0], h - self.centre[1], lat - self.centre[2])
        inner = self.half - self.rounding
        q = [
            np.abs(p[0] * self.axes[0, i] + p[1] * self.axes[1, i] + p[2] * self.axes[2, i])
            - inner[i]
            for i in range(3)
        ]
        outside = np.sqrt(sum(np.maximum(qi, 0.0) ** 2 for qi in q))
        inside = np.minimum(np.maximum(np.maximum(q[0], q[1]), q[2]), 0.0)
        return outside + inside - self.rounding


@dataclass(frozen=True)
class Blob(_SdfPart):
    """An axis-aligned ellipsoid (approximate distance)."""

    centre: Array = field(default_factory=lambda: np.zeros(3))
    radii: Array = field(default_factory=lambda: np.ones(3))

    @classmethod
    def of(cls, centre, radii, shell: float = 1.0) -> Blob:
        centre, radii = np.asarray(centre, float), np.asarray(radii, float)
        return cls(lo=centre - radii, hi=centre + radii, shell=shell, centre=centre, radii=radii)

    def sdf(self, a, h, lat):
        u = [(c - self.centre[k]) / self.radii[k] for k, c in enumerate((a, h, lat))]
        k0 = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        k1 = np.sqrt(sum((u[k] / self.radii[k]) ** 2 for k in range(3)))
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


@dataclass(frozen=True)
class Ring(_SdfPart):
    """C1: a tube of radius ``r`` around an ellipse in the a-l plane, taller than thick."""

    centre: Array = field(default_factory=lambda: np.zeros(3))
    ra: float = 20.0
    rl: float = 20.0
    r: float = 3.0
    stretch: float = 1.4

    @classmethod
    def of(cls, centre, ra: float, rl: float, r: float, stretch: float, shell: float) -> Ring:
        centre = np.asarray(centre, float)
        ext = np.array([ra + r, r * stretch, rl + r])
        return cls(
            lo=centre - ext,
            hi=centre + ext,
            shell=shell,
            centre=centre,
            ra=ra,
            rl=rl,
            r=r,
            stretch=stretch,
        )

    def sdf(self, a, h, lat):
        da, dl = a - self.centre[0], lat - self.centre[2]
        e = np.sqrt((da / self.ra) ** 2 + (dl / self.rl) ** 2)
        grad = np.sqrt((da / self.ra**2) ** 2 + (dl / self.rl**2) ** 2) / np.maximum(e, 1e-6)
        radial = (e - 1.0) / np.maximum(grad, 1e-6)
        return np.sqrt(radial**2 + ((h - self.centre[1]) / self.stretch) ** 2) - self.r


@dataclass(frozen=True)
class Plate(_SdfPart):
    """A flat elliptical plate (an iliac wing): in-plane semi-axes, thickness, orientation."""

    centre: Array = field(default_factory=lambda: np.zeros(3))
    axes: Array = field(default_factory=lambda: np.eye(3))  # columns: in-plane u, v, normal
    radii: tuple[float, float] = (60.0, 50.0)
    thickness: float = 6.0

    @classmethod
    def of(cls, centre, axes, radii, thickness: float, shell: float) -> Plate:
        centre, axes = np.asarray(centre, float), np.asarray(axes, float)
        ext = np.abs(axes) @ np.array([radii[0], radii[1], thickness])
        return cls(
            lo=centre - ext,
            hi=centre + ext,
            shell=shell,
            centre=centre,
            axes=axes,
            radii=(float(radii[0]), float(radii[1])),
            thickness=thickness,
        )

    def sdf(self, a, h, lat):
        p = (a - self.centre[0], h - self.centre[1], lat - self.centre[2])
        q = [
            p[0] * self.axes[0, i] + p[1] * self.axes[1, i] + p[2] * self.axes[2, i]
            for i in range(3)
        ]
        ru, rv = self.radii
        e = np.sqrt((q[0] / ru) ** 2 + (q[1] / rv) ** 2)
        grad = np.sqrt((q[0] / ru**2) ** 2 + (q[1] / rv**2) ** 2) / np.maximum(e, 1e-6)
        d_plane = (e - 1.0) / np.maximum(grad, 1e-6)
        return np.maximum(d_plane, np.abs(q[2]) - self.thickness / 2)


@dataclass(frozen=True)
class Tube:
    """A curved tube (a rib, the mandible, a clavicle), painted as overlapping balls."""

    lo: Array
    hi: Array
    points: Array
    radius: float
    shell: float

    @classmethod
    def of(cls, path: Array, radius: float, shell: float) -> Tube:
        path = np.asarray(path, float)
        seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        n = max(int(np.ceil(s[-1] / (radius * 0.3))), 2)
        t = np.linspace(0.0, s[-1], n)
        pts = np.stack([np.interp(t, s, path[:, k]) for k in range(3)], axis=1)
        return cls(pts.min(0) - radius, pts.max(0) + radius, pts, radius, shell)

    def paint(self, canvas: _Canvas) -> None:
        g = canvas.grid
        r = self.radius
        for p in self.points:
            blk = g.block(p - r - g.voxel, p + r + g.voxel)
            if blk is None:
                continue
            sl, a, h, lat = blk
            d = np.sqrt((a - p[0]) ** 2 + (h - p[1]) ** 2 + (lat - p[2]) ** 2) - r
            np.maximum(canvas.outer[sl], _occupancy(d, g.voxel), out=canvas.outer[sl])
            np.maximum(canvas.inner[sl], _occupancy(d + self.shell, g.voxel), out=canvas.inner[sl])


# --------------------------------------------------------------------------------------------
# Vertebral bodies


@dataclass(frozen=True)
class BodyShape:
    """A vertebral body in its local frame, centred on the origin (mm).

    ``width`` is the antero-posterior size, ``depth`` the lateral one; ``h_ant`` / ``h_post``
    the heights of the anterior and posterior walls at their rims.
    """

    width: float
    depth: float
    h_ant: float
    h_post: float
    conc_sup: float
    conc_inf: float
    rounding: float
    waist: float
    kind: str = "normal"  # "normal", "c2" (with the dens) or "s1" (top of the sacrum)
    dens_height: float = 0.0
    taper: float = 0.0  # S1: how far the anterior wall recedes from top to bottom
    back_bow: float = 1.5  # how far the middle of the posterior wall lies in front of its corners

    @property
    def height(self) -> float:
        return max(self.h_ant, self.h_post)

    def landmarks(self) -> dict[str, Array]:
        """Local points an annotator would click: the four rim corners in the mid-sagittal
        plane and the middles of the superior and inferior rims."""
        w, ha, hp = self.width, self.h_ant, self.h_post
        hm = (ha + hp) / 2
        return {
            "anterior_superior": np.array([w / 2, -ha / 2, 0.0]),
            "anterior_inferior": np.array([w / 2 - self.taper, ha / 2, 0.0]),
            "posterior_inferior": np.array([-w / 2, hp / 2, 0.0]),
            "posterior_superior": np.array([-w / 2, -hp / 2, 0.0]),
            "mid_superior": np.array(
                [0.0, -hm / 2 + (self.conc_sup if self.kind == "c2" else 0.0), 0.0]
            ),
            "mid_inferior": np.array([-self.taper / 2, hm / 2, 0.0]),
        }


@dataclass(frozen=True)
class Body(_SdfPart):
    shape: BodyShape | None = None

    @classmethod
    def of(cls, shape: BodyShape, shell: float) -> Body:
        ext = np.array([shape.width / 2 + 1, shape.height / 2 + 1, shape.depth / 2 + 1])
        lo, hi = -ext, ext.copy()
        lo[1] -= shape.dens_height
        return cls(lo=lo, hi=hi, shell=shell, channel="body", shape=shape)

    def sdf(self, a, h, lat):
        s = self.shape
        assert s is not None
        hm = (s.h_ant + s.h_post) / 2
        # Waisted walls: the body is narrowest half way up, as real bodies are.
        waist = 1.0 - s.waist * np.clip(1.0 - (2.0 * h / hm) ** 2, 0.0, 1.0)
        big_a = (s.width / 2) * waist
        if s.taper:
            front = big_a - s.taper * np.clip(h / hm + 0.5, 0.0, 1.0)
            big_a = np.where(a > 0, front, big_a)
        big_l = (s.depth / 2) * waist
        # Axial section: a rounded front, and a flat back wall bowed slightly inwards
        # between two posterolateral corners (so a rotated patient shows two back walls).
        q = np.abs(lat) / big_l
        back = a < 0
        a = np.where(back, a - s.back_bow * np.clip(1.0 - q**2, 0.0, 1.0), a)
        p = np.where(back, 5.0, 2.4)
        u = np.abs(a) / big_a
        rho = (u**p + q**p) ** (1.0 / p)
        grad = rho ** (1 - p) * np.sqrt((u ** (p - 1) / big_a) ** 2 + (q ** (p - 1) / big_l) ** 2)
        d_xy = (rho - 1.0) / np.maximum(grad, 1e-6)
        frac = np.clip(a / s.width + 0.5, 0.0, 1.0)
        half_h = (s.h_post + (s.h_ant - s.h_post) * frac) / 2
        bowl = np.clip(1.0 - rho**2, 0.0, 1.0)
        d_h = np.maximum(-half_h + s.conc_sup * bowl - h, h - half_h + s.conc_inf * bowl)
        r = s.rounding
        qx, qy = d_xy + r, d_h + r
        d = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
        d = d + np.minimum(np.maximum(qx, qy), 0) - r
        if s.kind == "c2":
            dens = Capsule.of(
                (-0.08 * s.width, -s.h_post / 2 + 3.0, 0.0),
                (-0.12 * s.width, -s.h_post / 2 - s.dens_height + 0.21 * s.width, 0.0),
                0.24 * s.width,
                0.21 * s.width,
            ).sdf(a, h, lat)
            k = 2.0  # smooth union: a waist where the dens meets the body
            mix = np.clip(0.5 + 0.5 * (dens - d) / k, 0.0, 1.0)
            d = dens * (1 - mix) + d * mix - k * mix * (1 - mix)
        return d


@dataclass(frozen=True)
class Disc(_SdfPart):
    width: float = 30.0
    depth: float = 40.0
    top: float = 0.0
    bottom: float = 10.0

    @classmethod
    def of(cls, width: float, depth: float, top: float, bottom: float) -> Disc:
        ext = np.array([width / 2 + 1, 0.0, depth / 2 + 1])
        lo = np.array([-ext[0], top - 1, -ext[2]])
        hi = np.array([ext[0], bottom + 1, ext[2]])
        return cls(
            lo=lo,
            hi=hi,
            shell=0.0,
            channel="disc",
            width=width,
            depth=depth,
            top=top,
            bottom=bottom,
        )

    def sdf(self, a, h, lat):
        rho = np.sqrt((2 * a / self.width) ** 2 + (2 * lat / self.depth) ** 2)
        d_xy = (rho - 1.0) * min(self.width, self.depth) / 2
        mid, half = (self.top + self.bottom) / 2, (self.bottom - self.top) / 2
        return np.maximum(d_xy, np.abs(h - mid) - half)


# --------------------------------------------------------------------------------------------
# Solids: groups of parts voxelised on one grid in one frame


@dataclass(frozen=True)
class SolidSpec:
    """What to voxelise: parts in ``frame``, their materials and texture.

    ``label`` names the vertebra whose body (the parts with channel "body") this solid
    holds; ``coarse`` solids (ribs, pelvis, jaw) are voxelised on a coarser grid.
    """

    name: str
    frame: Frame
    parts: tuple[Part, ...]
    cortical: float = CORTICAL
    cancellous: float = CANCELLOUS
    texture: float = 0.5
    streaks: bool = True  # trabeculae run along the local h axis
    label: str | None = None
    coarse: bool = False

    @property
    def bounds(self) -> tuple[Array, Array]:
        lo = np.min([p.lo for p in self.parts], axis=0)
        hi = np.max([p.hi for p in self.parts], axis=0)
        return lo, hi


@dataclass(frozen=True)
class VoxelSolid:
    """A voxelised solid: ``density`` (bone channel) and, for a body, its occupancy."""

    name: str
    frame: Frame
    lo: Array  # local coordinates of the centre of voxel (0, 0, 0)
    voxel: float
    density: NDArray[np.float32]
    body: NDArray[np.float32] | None
    label: str | None

    @property
    def bounds(self) -> tuple[Array, Array]:
        return self.lo - self.voxel / 2, self.lo + (np.array(self.density.shape) - 0.5) * self.voxel


def texture_tile(rng: np.random.Generator, voxel: float, size: int = 40) -> NDArray[np.float32]:
    """Band-pass noise (std 1) with a ~1 mm trabecular grain, stretched along axis 1."""
    noise = rng.standard_normal((size, size, size)).astype(np.float32)
    fine = gaussian_filter(noise, (0.45 / voxel, 1.3 / voxel, 0.45 / voxel), mode="wrap")
    broad = gaussian_filter(noise, 2.2 / voxel, mode="wrap")
    band = fine - broad
    return (band / max(float(band.std()), 1e-6)).astype(np.float32)


def voxelise(
    spec: SolidSpec, voxel: float, tile: NDArray[np.float32], rng: np.random.Generator
) -> VoxelSolid:
    """Sample ``spec`` on a grid of ``voxel`` mm (partial-volume edges)."""
    lo, hi = spec.bounds
    lo = lo - voxel
    shape = tuple(int(n) for n in np.ceil((hi + voxel - lo) / voxel).astype(int) + 1)
    grid = _Grid(lo, voxel, shape)  # type: ignore[arg-type]
    has_body = any(getattr(p, "channel", "") == "body" for p in spec.parts)
    has_disc = any(getattr(p, "channel", "") == "disc" for p in spec.parts)
    canvas = _Canvas(
        grid,
        np.zeros(shape, np.float32),
        np.zeros(shape, np.float32),
        np.zeros(shape, np.float32) if has_disc else None,
        np.zeros(shape, np.float32) if has_body else None,
    )
    for part in spec.parts:
        part.paint(canvas)
    cortex = canvas.outer - canvas.inner
    core = canvas.inner
    if spec.texture > 0:
        t = tile if spec.streaks else np.swapaxes(tile, 0, 1)
        reps = [int(np.ceil(n / t.shape[k])) + 1 for k, n in enumerate(shape)]
        off = rng.integers(0, t.shape[0], 3)
        tex = np.tile(t, reps)[
            off[0] : off[0] + shape[0], off[1] : off[1] + shape[1], off[2] : off[2] + shape[2]
        ]
        core = core * np.maximum(1.0 + spec.texture * tex, 0.0)
    density = spec.cortical * cortex + spec.cancellous * core
    if canvas.disc is not None:
        density += DISC * canvas.disc * (1.0 - canvas.outer)
    return VoxelSolid(
        spec.name, spec.frame, lo, voxel, density.astype(np.float32), canvas.body, spec.label
    )


# --------------------------------------------------------------------------------------------
# Analytic soft tissue, air and a few large bones


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in the patient frame; ``water`` and ``bone`` per mm of path inside.

    ``kind`` "lung" or "heart": along a ray, the heart displaces lung air (the two do not
    overlap in a body, but ellipsoids would)."""

    centre: Array
    radii: Array
    water: float = 0.0
    bone: float = 0.0
    axes: Array = field(default_factory=lambda: np.eye(3))
    kind: str = ""


@dataclass(frozen=True)
class Column:
    """An elliptic cylinder along y (neck, trunk, airway) whose centre and semi-axes vary
    along its length: knots ``ys`` with ``cx``, ``ax`` (antero-posterior semi-axis) and
    ``az`` (lateral semi-axis); the cross-section at a ray's y and x is taken where the ray
    crosses the plane z = ``cz`` (rays run nearly along z). The back of a trunk is flatter
    than an ellipse: ``p_back`` > 2."""

    ys: Array
    cx: Array
    ax: Array
    az: Array
    cz: float = 0.0
    water: float = 1.0
    bone: float = 0.0
    p_front: float = 2.0  # superellipse exponents of the front and back halves (2: ellipse)
    p_back: float = 2.0


# --------------------------------------------------------------------------------------------
# The patient


@dataclass(frozen=True)
class Vertebra:
    """One vertebra of the chain: its frame, body shape and what happened to it."""

    label: str
    frame: Frame
    shape: BodyShape
    nominal: BodyShape
    fracture: str | None
    osteophytes: bool
    narrowed: bool
    disc_below: float
    bone: float  # density scale (osteoporosis)
    post: dict[str, float]  # random proportions of the posterior elements


@dataclass(frozen=True)
class Patient:
    """Everything about the 3-D patient that the film needs."""

    region: str
    vertebrae: tuple[Vertebra, ...]
    solids: tuple[SolidSpec, ...]
    analytic: tuple[Ellipsoid | Column, ...]
    field_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the sagittal plane (mm)
    first: str
    last: str
    osteoporotic: bool
    airway_wall: Array | None = None
    """The airway's posterior wall where the rays meet it (patient mm, on the plane z = 0
    that :class:`Column` is sampled on), head first; None without an airway."""
    findings: Findings = NO_FINDINGS


def _depth_ratio(label: str) -> float:
    """Lateral width of a body over its antero-posterior width."""
    if label == "C2":
        return 1.2
    if label[0] == "C":
        return 1.45
    if label[0] == "T":
        return 1.05 + 0.3 * (int(label[1:]) - 1) / 11
    return 1.3 if label == "S1" else 1.4


def _curvature(label: str, k: dict[str, float]) -> float:
    return k["cervical" if label[0] == "C" else "thoracic" if label[0] == "T" else "lumbar"]


def _place_chain(
    labels: list[str],
    rng: np.random.Generator,
    region: str,
    bone: float,
    cervical_curvature: float | None = None,
) -> list[Vertebra]:
    """Walk down a curved sagittal centreline, one body (and its disc) at a time.
    ``cervical_curvature`` (1/mm) replaces the drawn one, after the draw."""
    scale = rng.uniform(0.88, 1.12)
    k = {
        # Signed curvature (1/mm): negative is lordosis, positive kyphosis.
        "cervical": rng.uniform(-0.007, 0.001) if rng.random() < 0.85 else rng.uniform(0, 0.003),
        "thoracic": rng.uniform(0.0012, 0.0035),
        "lumbar": rng.uniform(-0.0055, -0.0015),
    }
    if cervical_curvature is not None:
        k["cervical"] = cervical_curvature
    theta = rng.uniform(-0.35, 0.05) if region == "cervical" else rng.uniform(-0.1, 0.25)
    fracture_case = rng.random() < (0.15 if region == "cervical" else 0.35)
    scol_amp, scol_phase = rng.uniform(0.0, 5.0), rng.uniform(0, 2 * np.pi)
    out: list[Vertebra] = []
    centre = np.zeros(3)
    for i, label in enumerate(labels):
        w, h, disc = DIMENSIONS[label]
        w, h, disc = (
            w * scale * rng.uniform(0.95, 1.05),
            h * scale * rng.uniform(0.95, 1.05),
            disc * scale,
        )
        narrowed = label != "S1" and rng.random() < 0.12
        if narrowed:
            disc *= rng.uniform(0.3, 0.6)
        kind = {"C2": "c2", "S1": "s1"}.get(label, "normal")
        ha, hp = h * rng.uniform(0.95, 1.03), h * rng.uniform(0.97, 1.03)
        if label[0] == "L":
            ha, hp = ha * 1.03, hp * 0.97
        nominal = BodyShape(
            width=w,
            depth=w * _depth_ratio(label) * rng.uniform(0.95, 1.05),
            h_ant=ha,
            h_post=hp,
            conc_sup=h * rng.uniform(0.02, 0.05),
            conc_inf=h * rng.uniform(0.02, 0.05),
            rounding=min(w, h) * rng.uniform(0.05, 0.1),
            waist=rng.uniform(0.03, 0.07),
            kind=kind,
            dens_height=h * rng.uniform(0.9, 1.1) if kind == "c2" else 0.0,
            taper=w * rng.uniform(0.12, 0.22) if kind == "s1" else 0.0,
            back_bow=w * rng.uniform(0.03, 0.07),
        )
        shape, fracture = nominal, None
        if fracture_case and kind == "normal" and rng.random() < 0.18:
            fracture = str(rng.choice(FRACTURE_TYPES))
            loss = rng.uniform(0.10, 0.55)
            if fracture == "wedge":
                shape = replace(nominal, h_ant=nominal.h_post * (1 - loss))
            else:
                shape = replace(
                    nominal,
                    h_ant=nominal.h_ant * (1 - loss),
                    h_post=nominal.h_post * (1 - loss * 0.8),
                )
        if i:
            prev = out[-1]
            step = prev.shape.height / 2 + prev.disc_below + shape.height / 2
            centre = prev.frame.origin + prev.frame.axes[:, 1] * step
            theta += _curvature(label, k) * step
        tilt = theta + rng.normal(0.0, 0.03)
        if kind == "s1":
            tilt += rng.uniform(0.2, 0.45)  # the sacrum tips forward
        tangent = np.array([np.sin(tilt), np.cos(tilt), 0.0])
        normal = np.array([np.cos(tilt), -np.sin(tilt), 0.0])
        axes = np.stack([normal, tangent, np.array([0.0, 0.0, 1.0])], axis=1)
        axes = axes @ _rot_about(1, rng.normal(0.0, 0.02))  # a little axial rotation per level
        origin = centre.copy()
        origin[2] = scol_amp * np.sin(scol_phase + i * 0.35)
        out.append(
            Vertebra(
                label=label,
                frame=Frame(origin, axes),
                shape=shape,
                nominal=nominal,
                fracture=fracture,
                osteophytes=kind == "normal" and rng.random() < 0.15,
                narrowed=narrowed,
                disc_below=disc,
                bone=bone * (1.35 if fracture == "crush" else 1.0),
                post={
                    "spinous": rng.uniform(0.85, 1.15),
                    "pedicle": rng.uniform(0.9, 1.1),
                    "transverse": rng.uniform(0.85, 1.15),
                    "canal": rng.uniform(0.9, 1.1),
                },
            )
        )
    return out


def _moved(v: Vertebra, by: Array) -> Vertebra:
    return replace(v, frame=Frame(v.frame.origin + by, v.frame.axes))


def _sagittal_front(v: Vertebra) -> Array:
    """The body's anterior direction in the sagittal plane (x, y, 0), unit length."""
    front = v.frame.axes[:, 0].copy()
    front[2] = 0.0
    return front / np.linalg.norm(front)


def _plate_middle(v: Vertebra, which: str) -> Array:
    """Patient mm of the middle between the two corners of an endplate."""
    marks = v.shape.landmarks()
    local = (marks[f"anterior_{which}"] + marks[f"posterior_{which}"]) / 2
    return v.frame.to_patient(local)[0]


def _centre_joints(chain: list[Vertebra]) -> list[Vertebra]:
    """The chain with the bodies from T4 down lined up across each disc: each body (and
    everything below it) moved along the two bodies' mean front direction until the
    middles of the facing endplates line up. The walk puts each centre on the tangent of
    the body above, which leaves steps of 1-3 mm at curved thoracic and lumbar levels and
    L5 a fifth of an endplate forward of the tipped sacrum on a normal film (as in the 2-D
    phantom, :func:`~pacsnode.training.phantom.anatomy._centre_joints`). No random draw."""
    first = SPINE_ORDER.index("T4")
    out = [chain[0]]
    shift = np.zeros(3)
    for lower in chain[1:]:
        lower = _moved(lower, shift)
        if SPINE_ORDER.index(lower.label) >= first:
            front = _sagittal_front(out[-1]) + _sagittal_front(lower)
            front /= np.linalg.norm(front)
            gap = float(
                (_plate_middle(out[-1], "inferior") - _plate_middle(lower, "superior")) @ front
            )
            shift = shift + gap * front
            lower = _moved(lower, gap * front)
        out.append(lower)
    return out


def _translate(chain: list[Vertebra], translation: Translation) -> list[Vertebra]:
    """The chain with every body above ``translation``'s disc moved over the body below it,
    along that body's anterior direction (forward for a positive amount)."""
    labels = [v.label for v in chain]
    if translation.upper not in labels or translation.lower not in labels:
        return chain
    at = labels.index(translation.lower)
    below = chain[at]
    marks = below.shape.landmarks()
    endplate = float(np.linalg.norm(marks["anterior_superior"] - marks["posterior_superior"]))
    move = _sagittal_front(below) * translation.mm(endplate)
    return [_moved(v, move) for v in chain[:at]] + chain[at:]


def _blade(root: Array, tip: Array, half_ap: float, half_h: float) -> Box:
    """A flat process from ``root`` to ``tip`` (mostly lateral), thin front to back."""
    run = tip - root
    length = float(np.linalg.norm(run))
    along = run / length
    up = np.array([0.0, 1.0, 0.0])
    front = np.cross(up, along)
    front /= np.linalg.norm(front)
    up = np.cross(along, front)
    axes = np.stack([front, up, along], axis=1)
    return Box.of(
        (root + tip) / 2,
        (half_ap, half_h, length / 2),
        axes=axes,
        rounding=half_ap * 0.9,
        shell=0.8,
    )


def _posterior_parts(v: Vertebra) -> tuple[list[Part], list[Part]]:
    """The neural arch (pedicles, laminae, articular processes, spinous process) and the
    transverse processes, in the vertebra's local frame (a anterior, h inferior, l lateral)."""
    s, p = v.shape, v.post
    # Sized by the nominal height: a fractured body keeps its arch.
    w, big_h, depth = s.width, v.nominal.height, s.depth
    group = v.label[0]
    cerv, thor = group == "C", group == "T"
    shell = 1.1
    parts: list[Part] = []
    processes: list[Part] = []
    # Pedicles run back from the upper posterior body to the junction with the lamina.
    canal_w = (
        (25.0 if cerv else 17.0 if thor else 23.0) * w / (16.0 if cerv else 24.0 if thor else 35.0)
    )
    canal_w = float(np.clip(canal_w, 14.0, 28.0)) * p["canal"]
    ped_r = (2.6 if cerv else 3.6 if thor else 4.5) * p["pedicle"]
    ped_len = (0.38 if cerv else 0.45 if thor else 0.36) * w * p["pedicle"]
    lp = canal_w / 2 + ped_r
    a0, aj = -w / 2 + 1.0, -w / 2 - ped_len
    hp = -0.15 * big_h if not thor else -0.2 * big_h
    ped_hh = (0.25 if cerv else 0.3 if thor else 0.24) * big_h
    spin_len = (
        w
        * p["spinous"]
        * ({"C2": 1.3, "C6": 1.1, "C7": 1.6}.get(v.label, 0.85) if cerv else 1.25 if thor else 0.85)
    )
    for side in (-1.0, 1.0):
        parts.append(
            Box.of(
                ((a0 + aj) / 2, hp, side * lp),
                ((a0 - aj) / 2 + ped_r, ped_hh, ped_r),
                rounding=ped_r * 0.9,
                shell=shell,
            )
        )
        # Articular processes: a pillar in the neck, paired facets lower down.
        if cerv:
            tilt = _rot_about(2, 0.45)  # the cervical facets slope forward and down
            parts.append(
                Box.of(
                    (aj - 2.5, 0.05 * big_h, side * (lp + 1.0)),
                    (5.0, 0.68 * big_h, 4.5),
                    axes=tilt,
                    rounding=2.0,
                    shell=shell,
                )
            )
        else:
            parts.append(
                Box.of(
                    (aj - 1.5, -0.58 * big_h, side * (lp + 1.5)),
                    (4.0 if thor else 5.0, 0.3 * big_h, 3.2 if thor else 4.0),
                    rounding=2.0,
                    shell=shell,
                )
            )
            parts.append(
                Box.of(
                    (aj - 5.0, 0.48 * big_h, side * (lp - 1.0)),
                    (3.5 if thor else 4.5, 0.32 * big_h, 3.0 if thor else 3.8),
                    rounding=2.0,
                    shell=shell,
                )
            )
        # Transverse processes: flat blades, seen end-on, so only faintly.
        t_len = (5.0 if cerv else 17.0) * p["transverse"]
        if v.label == "L3":
            t_len *= 1.25
        if cerv:
            root = (-w / 2 + 4.0, 0.0, side * (depth / 2 - 1))
            tip = (-w / 2 + 5.0, 0.05 * big_h, side * (depth / 2 + t_len))
        elif thor:
            root = (aj + 1.0, -0.25 * big_h, side * lp)
            tip = (aj - 7.0, -0.15 * big_h, side * (lp + t_len))
        else:
            root = (aj + 2.0, -0.1 * big_h, side * lp)
            tip = (aj + 1.0, -0.08 * big_h, side * (lp + t_len))
        processes.append(
            _blade(np.array(root), np.array(tip), 2.0 if cerv else 3.0, 4.0 if cerv else 5.5)
        )
        # Lamina: from the pedicle junction to the spinous base in the midline.
        base = np.array([aj - (9.0 if cerv else 7.0 if thor else 8.0), 0.08 * big_h, 0.0])
        joint = np.array([aj - 1.0, 0.05 * big_h, side * lp])
        mid = (base + joint) / 2
        run = joint - base
        ang = np.arctan2(run[2], run[0])
        lam_axes = _rot_about(1, -ang)
        parts.append(
            Box.of(
                mid,
                (
                    np.hypot(run[0], run[2]) / 2 + 1.5,
                    (0.4 if cerv else 0.48 if thor else 0.4) * big_h,
                    1.8 if cerv else 2.2,
                ),
                axes=lam_axes,
                rounding=1.5,
                shell=shell,
            )
        )
    # Spinous process, from the laminar junction backwards (and down, steeply in the chest).
    base = np.array([aj - (9.0 if cerv else 7.0 if thor else 8.0), 0.05 * big_h, 0.0])
    drop = spin_len * (0.3 if cerv else 0.95 if thor else 0.12)
    if thor:
        n = int(v.label[1:])
        drop *= 0.55 + 0.45 * np.sin(np.pi * min(n, 11) / 12)
    ang = np.arctan2(drop, spin_len)
    sp_axes = _rot_about(2, -ang)
    length = float(np.hypot(spin_len, drop))
    centre = base + np.array([-spin_len / 2, drop / 2, 0.0])
    tall = (0.3 if v.label == "C2" else 0.2) * big_h if cerv else 3.2 if thor else 0.32 * big_h
    parts.append(
        Box.of(
            centre,
            (length / 2 + 2.0, tall, 2.5 if cerv else 3.0),
            axes=sp_axes,
            rounding=2.0,
            shell=shell,
        )
    )
    return parts, processes


def _body_parts(v: Vertebra, nxt: Vertebra | None) -> list[Part]:
    s = v.shape
    shell = (0.55 if v.label[0] == "C" else 0.65 if v.label[0] == "T" else 0.8) * min(1.0, v.bone)
    parts: list[Part] = [Body.of(s, shell=max(shell, 0.4))]
    if nxt is not None and v.disc_below > 0:
        parts.append(
            Disc.of(
                s.width * 1.03,
                s.depth * 1.03,
                s.height / 2 - s.conc_inf,
                s.height / 2 + v.disc_below + nxt.shape.conc_sup,
            )
        )
    if v.osteophytes:
        w, ha = s.width, s.h_ant
        for sign, length in ((-1.0, w * 0.18), (1.0, w * 0.15)):
            parts.append(
                Capsule.of(
                    (w / 2 - 1.5, sign * (ha / 2 - 1.0), 0.0),
                    (w / 2 + length * 0.7, sign * (ha / 2 + length * 0.5), 0.0),
                    2.2,
                    0.8,
                    shell=1.0,
                )
            )
    return parts


def _c1(c2: Vertebra, rng: np.random.Generator, bone: float) -> SolidSpec:
    """The atlas: a ring with anterior and posterior arches and lateral masses, no body."""
    s = c2.shape
    w = s.width
    h_c = -s.h_post / 2 - s.dens_height * rng.uniform(0.45, 0.6)
    front = w / 2 + rng.uniform(2.0, 3.5)  # the anterior arch sits just in front of the dens
    back = -w / 2 - rng.uniform(26.0, 32.0)
    ra = (front - back) / 2
    centre = np.array([(front + back) / 2, h_c, 0.0])
    parts: list[Part] = [
        Ring.of(centre, ra, rng.uniform(19.0, 23.0), 2.8, 1.5, shell=1.0),
        Blob.of((front, h_c, 0.0), (3.5, 5.5, 5.0), shell=1.0),  # anterior tubercle
        Blob.of((back + 1.0, h_c + 1.0, 0.0), (4.0, 4.5, 5.0), shell=1.0),  # posterior tubercle
    ]
    for side in (-1.0, 1.0):
        parts.append(
            Box.of((-0.05 * w, h_c + 1.0, side * 16.0), (8.0, 7.0, 6.5), rounding=3.0, shell=1.0)
        )
        # Transverse process: seen end-on, so thin-walled (a solid rod would show a ring).
        parts.append(
            Capsule.of(
                (-0.05 * w, h_c, side * 20.0),
                (-0.1 * w, h_c + 1.0, side * 32.0),
                2.8,
                2.2,
                shell=2.8,
            )
        )
    return SolidSpec("C1", c2.frame, tuple(parts), cortical=bone, cancellous=CANCELLOUS * bone)


def _sacrum(s1: Vertebra, rng: np.random.Generator, bone: float) -> SolidSpec:
    """S2 to S5 curving forward below the S1 body, the alae and the posterior crest."""
    s = s1.shape
    w, big_h, depth = s.width, s.height, s.depth
    parts: list[Part] = []
    centre = np.array([-s.taper / 2, big_h / 2, 0.0])
    direction = 0.0
    for fw, fh, fd in [(0.78, 0.8, 0.9), (0.62, 0.68, 0.72), (0.48, 0.58, 0.55), (0.38, 0.5, 0.42)]:
        direction += rng.uniform(0.12, 0.22)
        step = np.array([np.sin(direction), np.cos(direction), 0.0]) * big_h * fh
        mid = centre + step / 2 + np.array([-0.5 * (1 - fw) * w * 0.3, 0.0, 0.0])
        axes = _rot_about(2, -direction)
        parts.append(
            Box.of(
                mid,
                (w * fw / 2, big_h * fh / 2 + 1.0, depth * fd / 2),
                axes=axes,
                rounding=min(w * fw, big_h * fh) * 0.2,
                shell=0.8,
            )
        )
        crest = mid + axes @ np.array([-w * fw / 2 - 9.0, 0.0, 0.0])
        parts.append(Box.of(crest, (3.0, big_h * fh / 2, 6.0), axes=axes, rounding=2.0, shell=1.0))
        centre = centre + step
    for side in (-1.0, 1.0):
        # The alae: wings of mostly cancellous bone beside S1 and S2.
        parts.append(
            Blob.of(
                (-0.05 * w, 0.2 * big_h, side * (depth / 2 + 12.0)),
                (0.45 * w, 0.6 * big_h, 13.0),
                shell=0.6,
            )
        )
        parts.append(
            Box.of(
                (-w / 2 - 9.0, -big_h / 2 - 2.0, side * 17.0),
                (4.5, 7.0, 4.0),
                rounding=2.0,
                shell=1.0,
            )
        )
    return SolidSpec(
        "sacrum", s1.frame, tuple(parts), cortical=bone, cancellous=CANCELLOUS * bone * 1.1
    )


# --------------------------------------------------------------------------------------------
# Surroundings


def _spine_axis(chain: list[Vertebra]) -> tuple[Array, Array, Array]:
    """Knots along y of the spine: y, x of the body centres, and the AP body widths."""
    ys = np.array([v.frame.origin[1] for v in chain])
    xs = np.array([v.frame.origin[0] for v in chain])
    ws = np.array([v.shape.width for v in chain])
    far = 500.0
    return (
        np.concatenate([[ys[0] - far], ys, [ys[-1] + far]]),
        np.concatenate([[xs[0]], xs, [xs[-1]]]),
        np.concatenate([[ws[0]], ws, [ws[-1]]]),
    )


def _column(chain: list[Vertebra], front: float, back: float, half_width: float, **kw) -> Column:
    """Soft tissue around the spine. The skin does not follow every bend of the spine: its
    centre line is a smooth (quadratic) fit through the body centres."""
    ys, xs, ws = _spine_axis(chain)
    inner = slice(1, -1)
    fit = np.polyval(np.polyfit(ys[inner], xs[inner], 2 if len(chain) > 4 else 1), ys[inner])
    ends = (fit[1] - fit[0]) / (ys[2] - ys[1])
    smooth = np.concatenate([[fit[0] - ends * 0.0], fit, [fit[-1]]])
    width = float(np.mean(ws[inner]))
    return Column(
        ys=ys,
        cx=smooth + (front - back) / 2,
        ax=np.full_like(ys, width / 2 + (front + back) / 2),
        az=np.full_like(ys, half_width),
        **kw,
    )


def _rib(v: Vertebra, side: float, shape: dict[str, float]) -> Tube:
    """One rib of ``v``: head at the body, neck to the transverse process, then round the
    chest wall, sloping down towards the front."""
    s = v.shape
    f = v.frame
    head = f.to_patient(np.array([-0.32 * s.width, -0.2 * s.height, side * s.depth / 2]))[0]
    n = int(v.label[1:])
    ax, az = shape["ax"], shape["az"]
    tubercle_l = s.depth / 2 + 22.0
    back_x = f.origin[0] - s.width / 2 - 16.0 - 0.7 * n
    cx = back_x + ax
    psi0 = np.arcsin(np.clip(tubercle_l / az, 0.0, 0.95))
    psi1 = shape["end"]
    psi = np.linspace(psi0, psi1, 28)
    y0 = head[1] + 4.0
    y = y0 + shape["drop"] * (1 - np.cos(psi)) / 2 * (psi / psi1)
    ring = np.stack([cx - ax * np.cos(psi), y, side * az * np.sin(psi) + f.origin[2]], axis=1)
    path = np.vstack([head, ring])
    return Tube.of(path, shape["r"], shell=0.9)


def _ribs(chain: list[Vertebra], rng: np.random.Generator) -> list[Part]:
    out: list[Part] = []
    for v in chain:
        if v.label[0] != "T":
            continue
        n = int(v.label[1:])
        # Rib cage: small at the top, widest at T7-T8, floating ribs short at the bottom.
        grow = np.sin(np.pi * min(n + 1.5, 12) / 13.5)
        base = {
            "ax": 55.0 + 65.0 * grow,
            "az": 60.0 + 95.0 * grow,
            "drop": 25.0 + 45.0 * grow,
            "end": 2.3 if n <= 10 else (1.6 if n == 11 else 1.1),
            "r": 2.8 + 0.9 * grow,
        }
        for side in (-1.0, 1.0):
            shape = {k: val * rng.uniform(0.93, 1.07) for k, val in base.items()}
            out.append(_rib(v, side, shape))
    return out


def _airway_wall(chain: list[Vertebra], prevertebral_mm: dict[str, float]) -> tuple[Array, Array]:
    """The airway's posterior wall in the sagittal plane (x, y) mm, head first: through a
    point in front of each body's anterior-inferior corner, along the perpendicular to its
    anterior wall, ``prevertebral_mm`` in front at C2 and C6 and interpolated by level
    between them; forward of C1's anterior arch above C2, and on past the last body.
    Returns the wall, y increasing, and the point of it in front of each body."""
    c2, c6 = prevertebral_mm["C2"], prevertebral_mm["C6"]
    wall, anchors = [], []
    for v in chain:
        k = SPINE_ORDER.index(v.label) - SPINE_ORDER.index("C2")
        thickness = c2 + (c6 - c2) * min(k, 4) / 4  # C2 + k levels down, C6's below C6
        marks = v.shape.landmarks()
        at = {n: v.frame.to_patient(marks[n])[0][:2] for n in marks}
        along = at["anterior_inferior"] - at["anterior_superior"]
        ray = np.array([along[1], -along[0]]) / float(np.linalg.norm(along))
        if ray @ _sagittal_front(v)[:2] < 0:
            ray = -ray
        if v.label == "C2":
            s, w = v.shape, v.shape.width
            # C1's anterior tubercle reaches at most 7 mm in front of the dens' line.
            arch = v.frame.to_patient(
                np.array(
                    [w / 2 + 8.5 + max(thickness, 3.0), -s.h_post / 2 - s.dens_height * 0.5, 0]
                )
            )[0][:2]
            up = -v.frame.axes[:2, 1]
            wall.append(arch + up * 30.0 + _sagittal_front(v)[:2] * 5.5)
            wall.append(arch)
            wall.append(at["anterior_superior"] + ray * (thickness + 1.0))
        anchors.append(at["anterior_inferior"] + ray * thickness)
        wall.append(anchors[-1])
    wall.append(wall[-1] + chain[-1].frame.axes[:2, 1] * 60.0)
    # The airway is sampled in slices of y: keep the wall a function of y.
    kept = [wall[0]]
    for point in wall[1:]:
        if point[1] > kept[-1][1] + 0.5:
            kept.append(point)
    return np.array(kept), np.array(anchors)


def _neck(
    chain: list[Vertebra], rng: np.random.Generator, prevertebral_mm: dict[str, float] | None
) -> tuple[list[Part], list, Array]:
    """Neck, airway, head, shoulders, mandible and clavicles; and the airway's posterior
    wall (patient mm on z = 0, head first)."""
    c2 = chain[0]
    up, fwd = -c2.frame.axes[:, 1], c2.frame.axes[:, 0]
    o = c2.frame.origin
    analytic: list = []
    front, back, half_width = rng.uniform(30, 45), rng.uniform(45, 65), rng.uniform(52, 62)
    # The airway's old offset is still drawn, unused, so that every later draw stays.
    rng.uniform(7.0, 13.0)
    r_ap = rng.uniform(6.0, 9.0)
    air_az = rng.uniform(8.0, 12.0)
    wall, anchors = _airway_wall(chain, prevertebral_mm or PREVERTEBRAL_DEFAULT_MM)
    air_ys = wall[:, 1]
    air_ap = np.interp(air_ys, [air_ys[0], o[1] + 40, air_ys[-1]], [r_ap * 1.5, r_ap, r_ap * 0.9])
    # The skin keeps 12 mm or more in front of the airway, however swollen the neck.
    reach = max(
        float((a - v.frame.origin[:2]) @ _sagittal_front(v)[:2]) - v.shape.width / 2
        for a, v in zip(anchors, chain, strict=True)
    )
    front = max(front, reach + 2 * r_ap + 12.0)
    neck = _column(chain, front, back, half_width)
    # The neck narrows to nothing inside the head, leaving no edge.
    top = o[1] - 20.0
    ys = np.concatenate([[top - 60.0], neck.ys[neck.ys > top - 60.0]])
    fade = np.clip((ys - (top - 60.0)) / 60.0, 0.0, 1.0)
    analytic.append(
        replace(
            neck,
            ys=ys,
            cx=np.interp(ys, neck.ys, neck.cx),
            ax=np.interp(ys, neck.ys, neck.ax) * (0.4 + 0.6 * fade),
            az=np.interp(ys, neck.ys, neck.az) * fade,
        )
    )
    # Airway: pharynx and trachea, wider up high, its posterior wall on ``wall``.
    analytic.append(
        Column(air_ys, wall[:, 0] + air_ap, air_ap, np.full_like(air_ys, air_az), water=-1.0)
    )
    # Head and skull: soft tissue, then two tables of bone; the skull base and mastoids.
    # The head sits over the spine, its centre ahead of the foramen magnum.
    skull_c = o + np.array([rng.uniform(5.0, 25.0), -rng.uniform(95, 108), 0.0])
    tilt = _rot_about(2, rng.uniform(-0.25, 0.25))
    radii = np.array([rng.uniform(88, 98), rng.uniform(68, 76), rng.uniform(68, 76)])
    analytic.append(Ellipsoid(skull_c, radii + 6.0, water=1.0, axes=tilt))
    table = rng.uniform(5.0, 7.0)
    analytic.append(Ellipsoid(skull_c, radii, bone=0.45, axes=tilt))
    analytic.append(Ellipsoid(skull_c, radii - table, bone=-0.45, axes=tilt))
    for side in (-1.0, 1.0):
        petrous = o + up * rng.uniform(45, 55) + fwd * rng.uniform(0, 10)
        petrous[2] += side * 32.0
        analytic.append(
            Ellipsoid(
                petrous, np.array([14.0, 7.0, 18.0]), bone=0.3, axes=_rot_about(1, side * 0.6)
            )
        )
        mastoid = o + up * rng.uniform(32, 40) - fwd * rng.uniform(5, 15)
        mastoid[2] += side * 48.0
        analytic.append(Ellipsoid(mastoid, np.array([9.0, 13.0, 8.0]), bone=0.2))
    # Shoulders and humeral heads low over the cervicothoracic junction.
    idx = next(i for i, v in enumerate(chain) if v.label == "C7")
    c7 = chain[idx].frame.origin
    for side in (-1.0, 1.0):
        radii_sh = np.array([rng.uniform(70, 90), rng.uniform(90, 110), rng.uniform(55, 65)])
        drop = radii_sh[1] - rng.uniform(-5.0, 20.0)  # the top of the shoulder near C7
        sh = c7 + np.array([rng.uniform(-30, 0), drop, side * rng.uniform(130, 160)])
        analytic.append(Ellipsoid(sh, radii_sh, water=0.9))
        hc = sh + np.array([rng.uniform(-5, 15), rng.uniform(-5, 15), side * 15.0])
        r = rng.uniform(21, 25)
        analytic.append(Ellipsoid(hc, np.full(3, r), bone=0.28))
        analytic.append(Ellipsoid(hc, np.full(3, r - 1.8), bone=-0.18))
    # Coarse bones: mandible and clavicles.
    coarse: list[Part] = []
    gon = o + fwd * rng.uniform(30, 42) - up * rng.uniform(0, 12)
    chin = o + fwd * rng.uniform(85, 100) - up * rng.uniform(5, 20)
    cond = o + fwd * rng.uniform(18, 28) + up * rng.uniform(45, 55)
    half = rng.uniform(44, 52)
    for side in (-1.0, 1.0):
        g = gon + np.array([0, 0, side * half])
        c = cond + np.array([0, 0, side * (half - 2)])
        arc = np.array([g, (g + chin) / 2 + np.array([0, 0, side * half * 0.35]), chin])
        # Ramus and body as stacks of tubes: the bone is a tall, thin plate.
        for k in range(5):
            coarse.append(Tube.of(np.vstack([c, g]) + fwd * 4.0 * k, 4.0, shell=1.6))
            coarse.append(Tube.of(arc + np.array([0.0, 4.5 * k, 0.0]), 4.5, shell=1.8))
        t1 = chain[idx + 1].frame.origin
        clav = np.array(
            [
                t1 + np.array([rng.uniform(40, 60), rng.uniform(10, 25), side * 20.0]),
                t1 + np.array([rng.uniform(25, 40), rng.uniform(0, 10), side * 80.0]),
                c7 + np.array([rng.uniform(-25, -5), rng.uniform(-10, 10), side * 145.0]),
            ]
        )
        coarse.append(Tube.of(clav, rng.uniform(5.0, 6.5), shell=1.6))
    return coarse, analytic, np.column_stack([wall, np.zeros(len(wall))])


def _trunk(region: str, chain: list[Vertebra], rng: np.random.Generator) -> tuple[list[Part], list]:
    analytic: list = []
    front = rng.uniform(110, 190) if region == "lumbar" else rng.uniform(150, 200)
    trunk = _column(chain, front, rng.uniform(70, 100), rng.uniform(135, 175))
    analytic.append(replace(trunk, p_front=rng.uniform(2.0, 2.6), p_back=rng.uniform(3.0, 4.5)))
    coarse: list[Part] = []
    by = {v.label: v for v in chain}
    # Lungs: from the apex to the domes, deepest behind; the heart in front.
    t12 = by["T12"].frame.origin
    t6 = by.get("T6", by["T9"]).frame.origin
    ry = rng.uniform(140, 170)
    for side in (-1.0, 1.0):
        # The lungs reach behind the spine (paravertebral gutters) down to the posterior
        # costophrenic recess at about T12-L1.
        c = np.array(
            [
                t6[0] + rng.uniform(10, 30),
                t12[1] + rng.uniform(0, 20) - ry,
                side * rng.uniform(62, 78),
            ]
        )
        radii = np.array([rng.uniform(100, 120), ry, rng.uniform(52, 66)])
        analytic.append(
            Ellipsoid(
                c, radii, water=-0.75, axes=_rot_about(2, rng.uniform(-0.15, 0.0)), kind="lung"
            )
        )
    if region == "chest":
        t8 = by["T8"].frame.origin
        # The heart sits low and in front, on the diaphragm.
        heart = np.array(
            [t8[0] + rng.uniform(85, 105), t12[1] - rng.uniform(40, 60), rng.uniform(5, 20)]
        )
        analytic.append(
            Ellipsoid(
                heart,
                np.array([rng.uniform(50, 62), rng.uniform(50, 62), rng.uniform(55, 65)]),
                water=0.75,
                kind="heart",
            )
        )
        # Trachea down to the carina, tapering into the bronchi.
        ys_s, xs_s, ws_s = _spine_axis(chain)
        carina = by["T5"].frame.origin[1]
        ys = np.linspace(by["T1"].frame.origin[1] - 150.0, carina + 15.0, 12)
        xs = np.interp(ys, ys_s, xs_s + ws_s / 2) + rng.uniform(14, 20)
        az = np.interp(ys, [ys[0], carina - 15.0, carina + 15.0], [9.0, 9.0, 0.0])
        analytic.append(Column(ys, xs, np.full_like(ys, 8.0), az, water=-1.0))
        # Sternum along the front of the chest.
        top = np.array(
            [by["T2"].frame.origin[0] + front - 15.0, by["T2"].frame.origin[1] + 10.0, 0.0]
        )
        bottom = np.array([by["T9"].frame.origin[0] + front - 5.0, by["T9"].frame.origin[1], 0.0])
        coarse.append(Tube.of(np.array([top, bottom]), rng.uniform(4.5, 6.0), shell=1.2))
    else:
        coarse.extend(_pelvis(chain, rng, analytic))
    return coarse, analytic


def _pelvis(chain: list[Vertebra], rng: np.random.Generator, analytic: list) -> list[Part]:
    s1 = chain[-1]
    o = s1.frame.origin
    out: list[Part] = []
    for side in (-1.0, 1.0):
        yaw = side * rng.uniform(0.5, 0.75)  # the wings face forward and inward
        axes = _rot_about(1, yaw)
        # A tall plate: its crest arches over L4-L5, its lower part runs out of the field.
        ru, rv = rng.uniform(60, 75), rng.uniform(110, 130)
        crest_top = o[1] - rng.uniform(45, 70)
        c = np.array([o[0] + rng.uniform(0, 20), crest_top + rv, side * rng.uniform(70, 85)])
        out.append(Plate.of(c, axes, (ru, rv), rng.uniform(4.0, 7.0), shell=1.6))
        phi = np.linspace(0.2 * np.pi, 0.8 * np.pi, 20)
        crest = c + (axes @ np.stack([ru * np.cos(phi), -rv * np.sin(phi), np.zeros_like(phi)])).T
        out.append(Tube.of(crest, rng.uniform(4.0, 6.0), shell=1.8))
        hip = o + np.array([rng.uniform(35, 55), rng.uniform(85, 110), side * rng.uniform(80, 95)])
        r = rng.uniform(22, 26)
        analytic.append(Ellipsoid(hip, np.full(3, r), bone=0.3))
        analytic.append(Ellipsoid(hip, np.full(3, r - 2.0), bone=-0.2))
    for _ in range(int(rng.integers(1, 6))):
        j = int(rng.integers(len(chain) - 6, len(chain)))
        v = chain[j]
        gc = v.frame.origin + np.array(
            [rng.uniform(40, 110), rng.normal(0, 20), rng.uniform(-90, 90)]
        )
        for _ in range(int(rng.integers(1, 4))):  # a loop of bowel: a few bubbles together
            gr = np.array([rng.uniform(5, 18), rng.uniform(4, 12), rng.uniform(8, 25)])
            axes = _rot_about(2, rng.uniform(0, np.pi))
            analytic.append(
                Ellipsoid(gc + rng.normal(0, 8, 3), gr, water=-rng.uniform(0.4, 0.8), axes=axes)
            )
    return out


# --------------------------------------------------------------------------------------------


def build_patient(
    rng: np.random.Generator, region: str, findings: Findings = NO_FINDINGS
) -> Patient:
    """Draw one random patient for a lateral film of ``region``. ``findings`` are drawn
    with their own generator and take no draw from ``rng``."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    labels, first, last = chain_labels(region, rng)
    osteoporotic = bool(rng.random() < 0.2)
    bone = 0.6 if osteoporotic else 1.0
    chain = _centre_joints(_place_chain(labels, rng, region, bone, findings.cervical_curvature))
    if findings.translation is not None:
        chain = _translate(chain, findings.translation)
    airway_wall = None
    solids: list[SolidSpec] = []
    for i, v in enumerate(chain):
        nxt = chain[i + 1] if i + 1 < len(chain) else None
        solids.append(
            SolidSpec(
                f"{v.label} body",
                v.frame,
                tuple(_body_parts(v, nxt)),
                cortical=v.bone * (0.8 if osteoporotic else 1.0),
                cancellous=CANCELLOUS * v.bone,
                label=v.label,
            )
        )
        if v.label == "S1":
            solids.append(_sacrum(v, rng, bone))
        else:
            arch, processes = _posterior_parts(v)
            solids.append(
                SolidSpec(
                    f"{v.label} arch",
                    v.frame,
                    tuple(arch),
                    cortical=bone,
                    cancellous=CANCELLOUS * bone * 1.8,
                    texture=0.25,
                )
            )
            for k, part in enumerate(processes):
                solids.append(
                    SolidSpec(
                        f"{v.label} process {k}",
                        v.frame,
                        (part,),
                        cortical=0.55 * bone,
                        cancellous=CANCELLOUS * bone,
                        texture=0.0,
                    )
                )
    if region == "cervical":
        solids.append(_c1(chain[0], rng, bone))
        coarse, analytic, airway_wall = _neck(chain, rng, findings.prevertebral_mm)
    else:
        coarse, analytic = _trunk(region, chain, rng)
        solids.append(
            SolidSpec(
                "ribs",
                IDENTITY,
                tuple(_ribs(chain, rng)),
                cortical=0.65 * bone,
                cancellous=CANCELLOUS * bone,
                texture=0.0,
                coarse=True,
            )
        )
    solids.append(
        SolidSpec(
            "surroundings",
            IDENTITY,
            tuple(coarse),
            cortical=0.9 * bone,
            cancellous=CANCELLOUS * bone,
            texture=0.0,
            coarse=True,
        )
    )

    # Field of view in the sagittal plane, framed on the first and last vertebra shown.
    by = {v.label: v for v in chain}
    head, tail = by[first], by[last]
    top = head.frame.origin - head.frame.axes[:, 1] * (
        head.shape.height / 2 + head.shape.dens_height
    )
    bottom = tail.frame.origin + tail.frame.axes[:, 1] * tail.shape.height / 2
    margin_top = rng.uniform(12.0, 35.0) if region == "cervical" else rng.uniform(10.0, 40.0)
    margin_bottom = rng.uniform(15.0, 60.0) if region == "lumbar" else rng.uniform(5.0, 30.0)
    width = {
        "cervical": rng.uniform(150, 210),
        "lumbar": rng.uniform(220, 300),
        "chest": rng.uniform(300, 380),
    }[region]
    x_off = {
        "cervical": rng.uniform(0, 25),
        "lumbar": rng.uniform(0, 40),
        "chest": rng.uniform(20, 55),
    }[region]
    shown = [
        v.frame.origin[0]
        for v in chain
        if SPINE_ORDER.index(first) <= SPINE_ORDER.index(v.label) <= SPINE_ORDER.index(last)
    ]
    cx = float(np.mean(shown)) + x_off
    box = (
        cx - width / 2,
        float(top[1] - margin_top),
        cx + width / 2,
        float(bottom[1] + margin_bottom),
    )
    return Patient(
        region=region,
        vertebrae=tuple(chain),
        solids=tuple(solids),
        analytic=tuple(analytic),
        field_box=box,
        first=first,
        last=last,
        osteoporotic=osteoporotic,
        airway_wall=airway_wall,
        findings=findings,
    )
