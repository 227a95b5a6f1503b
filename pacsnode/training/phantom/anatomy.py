"""Random anatomy for lateral spine phantoms: a curved chain of vertebrae with its
surroundings, described as attenuating polygons in millimetres in the patient plane.

The scene is drawn in a canonical frame (spine running down, anterior to +x), then mirrored
and rotated onto the detector. Image coordinates are (x, y) = (column, row) directions in mm
from the top-left corner of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.findings import genant_grade
from pacsnode.training.phantom.findings import NO_FINDINGS, Findings, Translation
from pacsnode.training.phantom.geometry import (
    Polygon,
    arc_band,
    ellipse,
    nearest_vertex,
    resample_closed,
    signed_area,
    similarity,
    smooth_closed,
    thick_polyline,
)

__all__ = ["REGIONS", "Scene", "Structure", "VertebraTruth", "build_scene", "genant_grade"]

REGIONS = ("cervical", "lumbar", "chest")
OUTLINE_POINTS = 64

# Nominal body size (AP width, height) and the disc below it, in mm, for an adult.
_CERVICAL = {
    "C2": (15.0, 15.0, 4.5),
    "C3": (15.0, 13.0, 4.5),
    "C4": (15.5, 13.0, 4.5),
    "C5": (16.0, 13.0, 5.0),
    "C6": (16.5, 13.5, 5.0),
    "C7": (17.0, 14.5, 5.0),
}
_THORACIC = {
    f"T{i}": (18.0 + 12.0 * (i - 1) / 11, 16.0 + 7.0 * (i - 1) / 11, 4.0 + 2.5 * (i - 1) / 11)
    for i in range(1, 13)
}
_LUMBAR = {
    "L1": (33.0, 25.0, 9.0),
    "L2": (34.0, 26.0, 10.0),
    "L3": (35.0, 27.0, 10.5),
    "L4": (36.0, 27.0, 11.0),
    "L5": (37.0, 26.0, 9.0),
    "S1": (40.0, 28.0, 0.0),
}
DIMENSIONS: dict[str, tuple[float, float, float]] = {**_CERVICAL, **_THORACIC, **_LUMBAR}
SPINE_ORDER = list(DIMENSIONS)

# Excess linear attenuation over soft tissue (1/mm) at an effective ~60 keV beam.
MU_SOFT = 0.020
MU_CORTICAL = 0.060
MU_CANCELLOUS = 0.016
MU_METAL = 0.35
MU_AIR = -0.019

FRACTURE_TYPES = ("wedge", "biconcave", "crush")


@dataclass(frozen=True)
class Structure:
    """One attenuating object.

    The path length through it grows from 0 at its outline to ``depth`` mm at ``radius`` mm
    inside (an elliptical chord profile); a ``shell`` mm thick rim attenuates with
    ``shell_mu`` instead of ``mu`` (1/mm), which makes cortical bone bright where the beam
    runs tangentially to it.
    """

    polygon: Polygon
    mu: float
    depth: float
    radius: float
    shell: float = 0.0
    shell_mu: float = 0.0
    texture: float = 0.0
    coarse: bool = False
    kind: str = ""
    """What it is, where an appearance family treats it apart: "body", "posterior"."""


@dataclass(frozen=True)
class VertebraTruth:
    """Ground truth of one vertebral body, in image mm (x, y)."""

    label: str
    outline: Polygon
    corners: dict[str, NDArray[np.float64]]
    mid_superior: NDArray[np.float64]
    mid_inferior: NDArray[np.float64]
    expected_height_mm: float
    fracture: str | None
    osteophytes: bool
    disc_below_narrowed: bool

    @property
    def heights_mm(self) -> dict[str, float]:
        return _heights(self.corners, self.mid_superior, self.mid_inferior)

    @property
    def height_loss(self) -> float:
        return max(0.0, 1.0 - min(self.heights_mm.values()) / self.expected_height_mm)

    @property
    def genant(self) -> int:
        return genant_grade(self.height_loss)


@dataclass
class Scene:
    """Everything needed to render one film and describe its truth."""

    region: str
    size_mm: tuple[float, float]  # (width, height) of the image in the patient plane
    structures: list[Structure]
    vertebrae: list[VertebraTruth]
    partial: list[str]
    facing: str  # "right" or "left": where the patient's anterior is on the image
    rotation_deg: float
    collimation: tuple[float, float, float, float]  # x0, y0, x1, y1 in mm
    marker: tuple[str, float, float, float]  # letter, x, y, size in mm
    metal: bool
    osteoporotic: bool
    exposure: dict[str, float] = field(default_factory=dict)
    airway_wall: NDArray[np.float64] | None = None
    """The airway's posterior wall, an open polyline from the head down, image mm (x, y);
    None where the film has no airway drawn."""
    findings: Findings = NO_FINDINGS
    """The read-out findings the film was drawn with."""


# --------------------------------------------------------------------------------------------
# Vertebral bodies


@dataclass(frozen=True)
class _BodyShape:
    width: float
    h_ant: float
    h_post: float
    conc_sup: float
    conc_inf: float
    corner: float
    kind: str = "normal"  # "normal", "c2" or "s1"
    dens_height: float = 0.0


def _body_local(shape: _BodyShape) -> tuple[Polygon, dict[str, NDArray[np.float64]], float, float]:
    """Outline of a body in its local frame (a: anterior, h: inferior), clockwise on screen,
    dense; returns (polygon, sharp corners, middle superior h, middle inferior h)."""
    w, ha, hp = shape.width, shape.h_ant, shape.h_post
    m = 40
    a = np.linspace(-w / 2, w / 2, m)
    frac = (a + w / 2) / w
    height = hp + (ha - hp) * frac
    bowl = 1.0 - (2.0 * a / w) ** 2
    sup = -height / 2 + shape.conc_sup * bowl
    inf = height / 2 - shape.conc_inf * bowl
    sup_drawn = sup.copy()
    if shape.kind == "c2":
        # The dens: a rounded peg rising from the body, a little behind its middle.
        centre, half = -0.08 * w, 0.24 * w
        u = np.clip(1.0 - ((a - centre) / half) ** 2, 0.0, None)
        sup_drawn = sup - shape.dens_height * np.sqrt(u) ** 0.6
    taper = 0.22 * w if shape.kind == "s1" else 0.0
    h_wall = np.linspace(-ha / 2, ha / 2, m)[1:-1]
    wall_bow = 0.03 * w * (1.0 - (2.0 * h_wall / ha) ** 2)
    ant = np.stack([w / 2 - wall_bow - taper * (h_wall + ha / 2) / ha, h_wall], axis=1)
    hp_wall = np.linspace(hp / 2, -hp / 2, m)[1:-1]
    post = np.stack([-w / 2 + 0.02 * w * (1.0 - (2.0 * hp_wall / hp) ** 2), hp_wall], axis=1)
    inf_a = a.copy()
    if taper:
        inf_a = -w / 2 + (a + w / 2) * (w - taper) / w
    top = np.stack([a, sup_drawn], axis=1)
    bottom = np.stack([inf_a, inf], axis=1)[::-1]
    poly = np.vstack([top, ant, bottom, post])
    corners = {
        "anterior_superior": np.array([w / 2, sup[-1]]),
        "anterior_inferior": np.array([inf_a[-1], inf[-1]]),
        "posterior_inferior": np.array([-w / 2, inf[0]]),
        "posterior_superior": np.array([-w / 2, sup[0]]),
    }
    mid = m // 2
    return poly, corners, float((sup[mid] + sup[mid - 1]) / 2), float((inf[mid] + inf[mid - 1]) / 2)


def _finish_outline(
    poly: Polygon, corner_mm: float, to_world
) -> tuple[Polygon, NDArray[np.float64]]:
    """Round corners, resample to OUTLINE_POINTS, map to world; returns (outline, dense)."""
    dense = resample_closed(poly, 400)
    perimeter = float(np.sum(np.hypot(*np.diff(np.vstack([dense, dense[:1]]), axis=0).T)))
    dense = smooth_closed(dense, sigma_points=corner_mm / perimeter * 400)
    return to_world(dense), dense


@dataclass
class _Placed:
    label: str
    centre: NDArray[np.float64]
    tangent: NDArray[np.float64]
    shape: _BodyShape
    nominal: _BodyShape
    fracture: str | None
    osteophytes: bool
    narrowed: bool
    disc_below: float  # mm between this body and the next

    @property
    def normal(self) -> NDArray[np.float64]:
        """Unit vector towards the patient's front (the tangent turned a quarter)."""
        return np.array([self.tangent[1], -self.tangent[0]])


def _frame(p: _Placed):
    """Map local body coordinates (a: anterior, h: inferior) of ``p`` to scene mm."""
    centre, normal, tangent = p.centre, p.normal, p.tangent

    def to_world(local: NDArray[np.float64]) -> NDArray[np.float64]:
        local = np.atleast_2d(local)
        return centre + local[:, :1] * normal + local[:, 1:2] * tangent

    return to_world


def _measure(shape: _BodyShape, to_world) -> tuple[Polygon, dict, NDArray, NDArray]:
    poly, corners, mid_sup, mid_inf = _body_local(shape)
    dense_world, dense_local = _finish_outline(poly, shape.corner, to_world)
    # Corners are where an annotator clicks: the outline point nearest the sharp corner.
    idx = {k: nearest_vertex(dense_local, v) for k, v in corners.items()}
    start = idx["anterior_superior"]
    outline = resample_closed(dense_world, OUTLINE_POINTS, start=start)
    world_corners = {k: dense_world[i] for k, i in idx.items()}
    ms = to_world(np.array([0.0, mid_sup]))[0]
    mi = to_world(np.array([0.0, mid_inf]))[0]
    return outline, world_corners, ms, mi


# --------------------------------------------------------------------------------------------
# The scene


def chain_labels(region: str, rng: np.random.Generator) -> tuple[list[str], str, str]:
    """Labels of the modelled chain, and the first/last that the field is framed on."""
    """Labels of the modelled chain, and the first/last that the field is framed on."""
    if region == "cervical":
        last = str(rng.choice(["C7", "T1", "T1", "T2"]))
        return SPINE_ORDER[: SPINE_ORDER.index("T3") + 1], "C2", last
    if region == "lumbar":
        first = str(rng.choice(["T11", "T12", "T12", "L1"]))
        return SPINE_ORDER[SPINE_ORDER.index("T9") :], first, "S1"
    first = str(rng.choice(["T1", "T2", "T3"]))
    last = str(rng.choice(["T11", "T12", "L1"]))
    return SPINE_ORDER[SPINE_ORDER.index("C6") : SPINE_ORDER.index("L3") + 1], first, last


def _curvature(label: str, k: dict[str, float]) -> float:
    if label.startswith("C"):
        return k["cervical"]
    if label.startswith("T"):
        return k["thoracic"]
    return k["lumbar"]


def _place_chain(
    labels: list[str],
    rng: np.random.Generator,
    region: str,
    cervical_curvature: float | None = None,
) -> list[_Placed]:
    """Walk down the chain, one body and its disc at a time. ``cervical_curvature`` (1/mm)
    replaces the drawn one, after the draw, so that the stream stays as it was."""
    scale = rng.uniform(0.88, 1.12)
    k = {
        # Signed curvature (1/mm): negative is lordosis (concave behind), positive kyphosis.
        "cervical": rng.uniform(-0.007, 0.001) if rng.random() < 0.85 else rng.uniform(0.0, 0.003),
        "thoracic": rng.uniform(0.0012, 0.0035),
        "lumbar": rng.uniform(-0.007, -0.002),
    }
    if cervical_curvature is not None:
        k["cervical"] = cervical_curvature
    theta = rng.uniform(-0.35, 0.05) if region == "cervical" else rng.uniform(-0.1, 0.25)
    fracture_case = rng.random() < (0.15 if region == "cervical" else 0.35)
    placed: list[_Placed] = []
    for i, label in enumerate(labels):
        w, h, disc = DIMENSIONS[label]
        w, h, disc = (
            w * scale * rng.uniform(0.95, 1.05),
            h * scale * rng.uniform(0.95, 1.05),
            disc * scale,
        )
        narrowed = label not in ("S1",) and rng.random() < 0.12
        if narrowed:
            disc *= rng.uniform(0.3, 0.6)
        kind = {"C2": "c2", "S1": "s1"}.get(label, "normal")
        hp = h * rng.uniform(0.97, 1.03)
        ha = h * rng.uniform(0.95, 1.03)
        if label.startswith("L"):
            ha, hp = ha * 1.03, hp * 0.97  # lumbar bodies are slightly taller in front
        nominal = _BodyShape(
            width=w,
            h_ant=ha,
            h_post=hp,
            conc_sup=h * rng.uniform(0.02, 0.06),
            conc_inf=h * rng.uniform(0.02, 0.06),
            corner=min(w, h) * rng.uniform(0.08, 0.14),
            kind=kind,
            dens_height=h * rng.uniform(0.85, 1.05) if kind == "c2" else 0.0,
        )
        shape, fracture = nominal, None
        eligible = kind == "normal" and label not in ("C2",)
        if fracture_case and eligible and rng.random() < 0.18:
            fracture = str(rng.choice(FRACTURE_TYPES))
            loss = rng.uniform(0.10, 0.55)
            if fracture == "wedge":
                shape = replace(nominal, h_ant=nominal.h_post * (1 - loss))
            elif fracture == "biconcave":
                extra = (h * loss - nominal.conc_sup - nominal.conc_inf) / 2
                shape = replace(
                    nominal,
                    conc_sup=nominal.conc_sup + max(extra, 0.0),
                    conc_inf=nominal.conc_inf + max(extra, 0.0),
                )
            else:
                shape = replace(
                    nominal,
                    h_ant=nominal.h_ant * (1 - loss),
                    h_post=nominal.h_post * (1 - loss * 0.8),
                )
        height = max(shape.h_ant, shape.h_post)
        if i == 0:
            centre = np.zeros(2)
        else:
            prev = placed[-1]
            prev_h = max(prev.shape.h_ant, prev.shape.h_post)
            step = prev_h / 2 + prev.disc_below + height / 2
            centre = prev.centre + prev.tangent * step
            theta += _curvature(label, k) * step
        tilt = theta + rng.normal(0.0, 0.03)
        if kind == "s1":
            tilt += rng.uniform(0.25, 0.55)  # the sacrum tips forward
        tangent = np.array([np.sin(tilt), np.cos(tilt)])
        placed.append(
            _Placed(
                label=label,
                centre=centre,
                tangent=tangent,
                shape=shape,
                nominal=nominal,
                fracture=fracture,
                osteophytes=kind == "normal" and rng.random() < 0.15,
                narrowed=narrowed,
                disc_below=disc,
            )
        )
    return placed


def _endplate_middles(p: _Placed) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Scene mm of the middles between the sharp corners of the superior and the inferior
    endplate of ``p``."""
    _, corners, _, _ = _body_local(p.shape)
    to_world = _frame(p)
    sup = (corners["anterior_superior"] + corners["posterior_superior"]) / 2
    inf = (corners["anterior_inferior"] + corners["posterior_inferior"]) / 2
    return to_world(sup)[0], to_world(inf)[0]


def _centre_joints(placed: list[_Placed]) -> None:
    """Line the bodies from T4 down up across each disc, in place.

    The chain is walked with each body's centre on the tangent of the body above, so a
    curved level leaves the lower body off the arc by about step x angle / 2: 3 mm forward
    at a lordotic lumbar level, 1-1.5 mm backward at a kyphotic thoracic one, and the
    sacrum, tipped about its own centre, leaves L5 a fifth of an endplate forward of S1.
    Those are steps and a grade I slip on every normal film. Here each body from T4 down
    (and everything below it) moves along the two bodies' mean front direction until the
    middles of the facing endplates line up, so the anterior and posterior lines step only
    by about half the difference in body width. Angles and discs stay as drawn, and no
    random draw is used. The cervical chain and T1-T3, which end a cervical film's chain,
    are left as drawn: their walk errs by a mm at most, and cervical films keep their
    anatomy.
    """
    first = SPINE_ORDER.index("T4")
    shift = np.zeros(2)
    for upper, lower in pairwise(placed):
        # The lower body first follows the bodies above it, as drawn relative to them.
        lower.centre = lower.centre + shift
        if SPINE_ORDER.index(lower.label) < first:
            continue
        front = upper.normal + lower.normal
        front /= np.hypot(*front)
        gap = float((_endplate_middles(upper)[1] - _endplate_middles(lower)[0]) @ front)
        shift = shift + gap * front
        lower.centre = lower.centre + gap * front


def _translate(placed: list[_Placed], translation: Translation) -> None:
    """Move every body above ``translation``'s disc over the body below it, in place:
    along the lower body's anterior direction, forward for a positive amount."""
    labels = [p.label for p in placed]
    if translation.upper not in labels or translation.lower not in labels:
        return
    below = placed[labels.index(translation.lower)]
    # A slip is a share of the endplate between the corners an annotator clicks.
    _, corners, _, _ = _measure(below.shape, _frame(below))
    endplate = float(np.hypot(*(corners["anterior_superior"] - corners["posterior_superior"])))
    move = below.normal * translation.mm(endplate)
    for p in placed[: labels.index(translation.lower)]:
        p.centre = p.centre + move


def _posterior_elements(p: _Placed) -> list[Polygon]:
    if p.shape.kind == "s1":
        return []  # the sacrum's posterior elements are drawn with the sacrum
    w, h = p.shape.width, max(p.shape.h_ant, p.shape.h_post)
    to_world = _frame(p)
    cervical = p.label.startswith("C")
    thoracic = p.label.startswith("T")
    ped_len = w * (0.45 if cervical else 0.35)
    x0 = -w / 2 + 0.5
    pedicle = np.array(
        [[x0, -0.42 * h], [x0 - ped_len, -0.38 * h], [x0 - ped_len, 0.02 * h], [x0, -0.02 * h]]
    )
    spin_len = w * {"C2": 1.1, "C7": 1.5}.get(p.label, 0.95 if cervical else 1.0)
    drop = h * (0.9 if thoracic else 0.35)
    xl = x0 - ped_len
    spinous = np.array(
        [
            [xl + 1.0, -0.45 * h],
            [xl - spin_len, -0.15 * h + drop],
            [xl - spin_len - 0.12 * w, 0.25 * h + drop],
            [xl - 0.3 * w, 0.5 * h],
            [xl + 1.0, 0.35 * h],
        ]
    )
    parts = [pedicle, spinous]
    if cervical:
        # Articular pillar: a rhomboid column behind the pedicle.
        parts.append(
            np.array(
                [
                    [xl + 2, -0.75 * h],
                    [xl - 0.35 * w, -0.55 * h],
                    [xl - 0.3 * w, 0.75 * h],
                    [xl + 2, 0.55 * h],
                ]
            )
        )
    out = []
    for part in parts:
        dense = resample_closed(part, 48)
        out.append(to_world(smooth_closed(dense, 1.5)))
    return out


def build_scene(rng: np.random.Generator, region: str, findings: Findings = NO_FINDINGS) -> Scene:
    """Draw one random lateral film of ``region`` ("cervical", "lumbar" or "chest").

    ``findings`` (:func:`~pacsnode.training.phantom.findings.draw_findings`) are drawn with
    their own generator and take no draw from ``rng``: a film without findings is the
    same film either way.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
    labels, first, last = chain_labels(region, rng)
    placed = _place_chain(labels, rng, region, findings.cervical_curvature)
    _centre_joints(placed)
    if findings.translation is not None:
        _translate(placed, findings.translation)
    osteoporotic = rng.random() < 0.2
    bone = 0.55 if osteoporotic else 1.0
    struct: list[Structure] = []
    truths_canon: list[tuple[_Placed, Polygon, dict, NDArray, NDArray, float]] = []

    lateral_depth = {"C": 20.0, "T": 30.0, "L": 45.0, "S": 45.0}
    for p in placed:
        to_world = _frame(p)
        outline, corners, ms, mi = _measure(p.shape, to_world)
        _, *nominal_landmarks = _measure(p.nominal, to_world)
        expected = max(_heights(*nominal_landmarks).values())
        truths_canon.append((p, outline, corners, ms, mi, expected))
        depth = lateral_depth[p.label[0]] * rng.uniform(0.9, 1.1)
        cortex = (0.9 if p.label[0] == "C" else 1.2) * (0.6 if osteoporotic else 1.0)
        struct.append(
            _bone(
                resample_closed(outline, 128),
                depth,
                min(p.shape.width, p.shape.h_post) / 2,
                cortex,
                mu=MU_CANCELLOUS * bone * (1.4 if p.fracture == "crush" else 1.0),
                shell_mu=MU_CORTICAL * (0.75 if osteoporotic else 1.0),
                texture=0.35,
                kind="body",
            )
        )
        struct.extend(
            _bone(
                part,
                depth * 0.5,
                3.0,
                1.0,
                mu=MU_CANCELLOUS * bone * 1.2,
                shell_mu=MU_CORTICAL * 0.8,
                texture=0.2,
                kind="posterior",
            )
            for part in _posterior_elements(p)
        )
        if p.osteophytes:
            struct.extend(_osteophytes(p, rng, bone))

    by_label = {p.label: p for p in placed}
    head, tail = by_label[first], by_label[last]
    top = head.centre - head.tangent * (0.5 * DIMENSIONS[first][1] + head.shape.dens_height)
    bottom = tail.centre + tail.tangent * 0.5 * DIMENSIONS[last][1]
    axis_pts = np.array([p.centre for p in placed])
    corners_canon = {p.label: corners for p, _, corners, *_ in truths_canon}
    around, wall = _surroundings(region, placed, rng, corners_canon, findings.prevertebral_mm)
    struct.extend(around)

    metal = rng.random() < 0.12
    if metal:
        struct.extend(_metal_plate(placed, first, last, rng))

    # Field of view in the canonical frame, then rotate the patient on the detector.
    margin_top = rng.uniform(20.0, 60.0) if region == "cervical" else rng.uniform(10.0, 40.0)
    margin_bottom = rng.uniform(15.0, 60.0) if region == "lumbar" else rng.uniform(5.0, 30.0)
    width = {
        "cervical": rng.uniform(150, 210),
        "lumbar": rng.uniform(220, 300),
        "chest": rng.uniform(300, 380),
    }[region]
    mean_x = float(np.mean(axis_pts[:, 0]))
    x_off = {
        "cervical": rng.uniform(0, 25),
        "lumbar": rng.uniform(0, 40),
        "chest": rng.uniform(20, 55),
    }[region]
    cx = mean_x + x_off
    y0 = top[1] - margin_top
    y1 = bottom[1] + margin_bottom
    box = np.array(
        [[cx - width / 2, y0], [cx + width / 2, y0], [cx + width / 2, y1], [cx - width / 2, y1]]
    )
    centre_canon = box.mean(axis=0)

    facing = "right" if rng.random() < 0.6 else "left"
    rotation = float(rng.normal(0.0, 6.0)) if rng.random() < 0.6 else float(rng.uniform(0.0, 360.0))
    angle = np.deg2rad(rotation)
    turned = similarity(
        box, centre=centre_canon, angle=angle, mirror_x=facing == "left", to=np.zeros(2)
    )
    size = turned.max(axis=0) - turned.min(axis=0)
    max_side = 3000 * 0.2 / 1.25  # keeps every film within 3000 px at 0.2 mm detector pitch
    size = np.minimum(size, max_side)
    to = size / 2

    def place(pts: NDArray[np.float64]) -> NDArray[np.float64]:
        return similarity(pts, centre=centre_canon, angle=angle, mirror_x=facing == "left", to=to)

    structures = [replace(s, polygon=place(s.polygon)) for s in struct]
    # Collimation: a rectangle inside the image, sometimes the whole image.
    w_mm, h_mm = float(size[0]), float(size[1])
    if rng.random() < 0.7:
        col = (
            rng.uniform(0, 0.06) * w_mm,
            rng.uniform(0, 0.05) * h_mm,
            w_mm - rng.uniform(0, 0.06) * w_mm,
            h_mm - rng.uniform(0, 0.05) * h_mm,
        )
    else:
        col = (0.0, 0.0, w_mm, h_mm)

    vertebrae: list[VertebraTruth] = []
    partial: list[str] = []
    inner = (col[0] + 2, col[1] + 2, col[2] - 2, col[3] - 2)
    for p, outline, corners, ms, mi, expected in truths_canon:
        o = place(outline)
        if facing == "left":
            o = np.vstack([o[:1], o[1:][::-1]])  # keep clockwise-on-screen from the same start
        inside = (
            (o[:, 0] >= inner[0])
            & (o[:, 0] <= inner[2])
            & (o[:, 1] >= inner[1])
            & (o[:, 1] <= inner[3])
        )
        if not inside.any():
            continue
        if not inside.all():
            partial.append(p.label)
            continue
        assert signed_area(o) > 0
        vertebrae.append(
            VertebraTruth(
                label=p.label,
                outline=o,
                corners={k: place(v[None])[0] for k, v in corners.items()},
                mid_superior=place(ms[None])[0],
                mid_inferior=place(mi[None])[0],
                expected_height_mm=expected,
                fracture=p.fracture,
                osteophytes=p.osteophytes,
                disc_below_narrowed=p.narrowed,
            )
        )

    letter = "R" if rng.random() < 0.5 else "L"
    msize = rng.uniform(8.0, 14.0)
    mx = rng.choice([col[0] + 6, col[2] - 6 - msize])
    my = rng.choice([col[1] + 6, col[3] - 6 - msize * 1.4])
    return Scene(
        region=region,
        size_mm=(w_mm, h_mm),
        structures=structures,
        vertebrae=vertebrae,
        partial=partial,
        facing=facing,
        rotation_deg=rotation % 360.0,
        collimation=col,
        marker=(letter, float(mx), float(my), float(msize)),
        metal=metal,
        osteoporotic=osteoporotic,
        airway_wall=None if wall is None else place(wall),
        findings=findings,
        exposure={
            "photons_behind_body_per_mm2": float(rng.uniform(8000, 40000)),
            "scatter_fraction": float(
                rng.uniform(0.2, 0.6) if region != "cervical" else rng.uniform(0.1, 0.35)
            ),
            "heel": float(rng.uniform(0.05, 0.25)),
            "heel_angle": float(rng.uniform(0, 2 * np.pi)),
            "blur_mm": float(rng.uniform(0.08, 0.2)),
            "electronic_noise": float(rng.uniform(0.5, 3.0)),
            "equalisation": float(rng.uniform(0.3, 0.7)),
        },
    )


def _heights(corners: dict, ms: NDArray, mi: NDArray) -> dict[str, float]:
    return {
        "anterior": float(
            np.linalg.norm(corners["anterior_superior"] - corners["anterior_inferior"])
        ),
        "middle": float(np.linalg.norm(ms - mi)),
        "posterior": float(
            np.linalg.norm(corners["posterior_superior"] - corners["posterior_inferior"])
        ),
    }


def _osteophytes(p: _Placed, rng: np.random.Generator, bone: float) -> list[Structure]:
    """Bony spurs at the anterior corners: drawn, but outside the body outline."""
    w, ha = p.shape.width, p.shape.h_ant
    to_world = _frame(p)
    out = []
    for sign in (-1.0, 1.0):
        if rng.random() < 0.4:
            continue
        length = w * rng.uniform(0.12, 0.25)
        base = np.array([w / 2 - 0.5, sign * (ha / 2 - 0.5)])
        tri = base + np.array(
            [[0.0, -sign * 3.0], [length, sign * length * 0.5], [-1.0, sign * 0.5]]
        )
        out.append(
            Structure(
                to_world(resample_closed(tri, 24)), mu=MU_CORTICAL * bone, depth=8.0, radius=1.0
            )
        )
    return out


def _metal_plate(
    placed: list[_Placed], first: str, last: str, rng: np.random.Generator
) -> list[Structure]:
    """An anterior plate spanning two or three bodies, with one screw into each."""
    labels = [p.label for p in placed]
    lo, hi = labels.index(first), labels.index(last)
    span = int(rng.integers(2, 4))
    start = int(rng.integers(lo, max(lo + 1, hi - span + 1)))
    bodies = placed[start : start + span]
    out: list[Structure] = []
    path = []
    for p in bodies:
        path.append(p.centre + p.normal * (p.shape.width / 2 + 2.5))
    path_arr = np.array(path)
    ext = (path_arr[-1] - path_arr[0]) / max(len(path) - 1, 1) * 0.45
    path_arr = np.vstack([path_arr[0] - ext, path_arr, path_arr[-1] + ext])
    dense = np.stack(
        [
            np.interp(
                np.linspace(0, len(path_arr) - 1, 40), np.arange(len(path_arr)), path_arr[:, k]
            )
            for k in range(2)
        ],
        axis=1,
    )
    out.append(Structure(thick_polyline(dense, 2.5), mu=MU_METAL, depth=14.0, radius=0.8))
    for p in bodies:
        a = p.centre + p.normal * (p.shape.width / 2 + 2.5)
        b = p.centre - p.normal * (p.shape.width * rng.uniform(0.2, 0.35))
        line = np.stack([np.linspace(a[k], b[k], 20) for k in range(2)], axis=1)
        out.append(Structure(thick_polyline(line, 3.5), mu=MU_METAL, depth=4.0, radius=1.2))
    return out


def _soft(polygon: Polygon, mu: float, depth: float, radius: float) -> Structure:
    """A large, smooth soft-tissue or air structure, rendered on the coarse grid."""
    return Structure(polygon, mu=mu, depth=depth, radius=radius, coarse=True)


def _bone(
    polygon: Polygon,
    depth: float,
    radius: float,
    shell: float,
    *,
    mu: float = MU_CANCELLOUS,
    shell_mu: float = MU_CORTICAL,
    texture: float = 0.0,
    coarse: bool = False,
    kind: str = "",
) -> Structure:
    """Cancellous bone inside a cortical shell ``shell`` mm thick."""
    return Structure(
        polygon,
        mu=mu,
        depth=depth,
        radius=radius,
        shell=shell,
        shell_mu=shell_mu,
        texture=texture,
        coarse=coarse,
        kind=kind,
    )


@dataclass(frozen=True)
class _Axis:
    """The chain of body centres with their tangents, normals and widths (arrays)."""

    cent: NDArray[np.float64]
    tang: NDArray[np.float64]
    norm: NDArray[np.float64]
    widths: NDArray[np.float64]

    @classmethod
    def of(cls, placed: list[_Placed]) -> _Axis:
        return cls(
            cent=np.array([p.centre for p in placed]),
            tang=np.array([p.tangent for p in placed]),
            norm=np.array([p.normal for p in placed]),
            widths=np.array([p.shape.width for p in placed]),
        )

    def band(self, front: NDArray[np.float64], back: NDArray[np.float64]) -> Polygon:
        """The region between skin lines ``front`` mm ahead of and ``back`` mm behind each
        body centre, extended far beyond both ends of the chain."""
        far = 400.0
        ends = (self.cent[0] - self.tang[0] * far, self.cent[-1] + self.tang[-1] * far)

        def skin(offset: NDArray[np.float64]) -> Polygon:
            return np.vstack(
                [
                    ends[0] + self.norm[0] * offset[0],
                    self.cent + self.norm * offset[:, None],
                    ends[1] + self.norm[-1] * offset[-1],
                ]
            )

        return np.vstack([skin(front), skin(-back)[::-1]])


def _surroundings(
    region: str,
    placed: list[_Placed],
    rng: np.random.Generator,
    corners: dict[str, dict[str, NDArray[np.float64]]],
    prevertebral_mm: dict[str, float] | None = None,
) -> tuple[list[Structure], Polygon | None]:
    """Soft tissue, air, and the bones around the spine that a real film shows; and the
    airway's posterior wall (canonical mm) where there is one."""
    axis = _Axis.of(placed)
    if region == "cervical":
        return _neck(placed, axis, rng, corners, prevertebral_mm)
    out = _trunk(region, placed, axis, rng)
    if region == "chest":
        out.extend(_thorax(placed, axis, rng))
    else:
        out.extend(_pelvis(placed, axis, rng))
    return out, None


PREVERTEBRAL_DEFAULT_MM = {"C2": 4.0, "C6": 14.0}
"""Soft tissue drawn in front of C2 and C6 when a film brings no findings of its own."""


def _airway_wall(
    placed: list[_Placed],
    corners: dict[str, dict[str, NDArray[np.float64]]],
    prevertebral_mm: dict[str, float],
) -> tuple[Polygon, Polygon]:
    """The airway's posterior wall, head first (canonical mm): through a point in front of
    each body's anterior-inferior corner, along the perpendicular to its anterior wall (the
    line a reader measures the soft tissue on), ``prevertebral_mm`` in front at C2 and C6
    and interpolated by level between them; up the nasopharynx above C2, and on past the
    last body below. Returns the wall and the point of it in front of each body."""
    c2, c6 = prevertebral_mm["C2"], prevertebral_mm["C6"]
    wall, anchors = [], []
    for p in placed:
        k = SPINE_ORDER.index(p.label) - SPINE_ORDER.index("C2")
        thickness = c2 + (c6 - c2) * min(k, 4) / 4  # C2 + k levels down, C6's below C6
        c = corners[p.label]
        along = c["anterior_inferior"] - c["anterior_superior"]
        ray = np.array([along[1], -along[0]]) / float(np.hypot(*along))
        if ray @ p.normal < 0:
            ray = -ray
        if p.label == "C2":
            # Up the front of C2, then clear of C1's anterior tubercle (which reaches 8.5 mm
            # in front of C2's anterior wall) to the nasopharynx.
            top = p.centre - p.tangent * (p.shape.h_post / 2 + p.shape.dens_height * 0.8)
            wall.append(top - p.tangent * 30.0 + p.normal * (p.shape.width / 2 + 14.0))
            wall.append(top + p.normal * (p.shape.width / 2 + 8.5 + max(thickness, 3.0)))
            wall.append(c["anterior_superior"] + ray * (thickness + 1.0))
        anchors.append(c["anterior_inferior"] + ray * thickness)
        wall.append(anchors[-1])
    last = placed[-1]
    wall.append(wall[-1] + last.tangent * 60.0)
    return np.array(wall), np.array(anchors)


def _neck(
    placed: list[_Placed],
    axis: _Axis,
    rng: np.random.Generator,
    corners: dict[str, dict[str, NDArray[np.float64]]],
    prevertebral_mm: dict[str, float] | None = None,
) -> tuple[list[Structure], Polygon]:
    """Neck, airway, skull base, mandible, C1, and the shoulders over C7/T1; and the
    airway's posterior wall."""
    cent, tang, norm, widths = axis.cent, axis.tang, axis.norm, axis.widths
    front = widths / 2 + rng.uniform(30, 45)
    back = widths / 2 + rng.uniform(45, 70)
    neck_depth = rng.uniform(100, 130)
    # Airway: pharynx and trachea, its posterior wall set by the prevertebral soft tissue
    # (the old offset is still drawn, unused, so every later draw stays as it was).
    rng.uniform(8, 14)
    lumen = rng.uniform(10, 18)
    wall, anchors = _airway_wall(placed, corners, prevertebral_mm or PREVERTEBRAL_DEFAULT_MM)
    heading = np.gradient(wall, axis=0)
    heading /= np.hypot(*heading.T)[:, None]
    forward = np.stack([heading[:, 1], -heading[:, 0]], axis=1)
    forward *= np.sign(np.sum(forward * norm[0], axis=1))[:, None]
    airway = np.vstack([wall, (wall + forward * lumen)[::-1]])
    # The skin keeps 12 mm or more in front of the airway, however swollen the neck.
    reach = np.sum((anchors - cent) * norm, axis=1) + lumen + 12.0
    front = np.maximum(front, reach)
    out = [_soft(axis.band(front, back), MU_SOFT, neck_depth, 35.0)]
    # On the fine grid: the soft tissue is read off the airway's wall to a fraction of a mm.
    out.append(Structure(airway, mu=MU_AIR, depth=rng.uniform(15, 22), radius=5.0))
    # Skull base, occiput and mandible above, C1 around the dens.
    c2 = placed[0]
    n2 = c2.normal
    skull_c = c2.centre - c2.tangent * rng.uniform(70, 95) - n2 * rng.uniform(5, 30)
    head = ellipse(*skull_c, rng.uniform(85, 100), rng.uniform(60, 75), rng.uniform(-0.3, 0.3), 96)
    out.append(_soft(head, MU_SOFT, 140.0, 40.0))
    skull = ellipse(*skull_c, rng.uniform(80, 95), rng.uniform(55, 70), rng.uniform(-0.3, 0.3), 96)
    out.append(_bone(skull, 120.0, 30.0, 6.0, mu=0.004, coarse=True))
    mand_c = c2.centre + n2 * rng.uniform(45, 60) - c2.tangent * rng.uniform(0, 15)
    mandible = arc_band(
        *mand_c,
        rng.uniform(35, 45),
        rng.uniform(25, 35),
        rng.uniform(-0.2, 0.3),
        1.2,
        3.6,
        rng.uniform(9, 13),
    )
    out.append(_bone(mandible, 25.0, 4.0, 2.5))
    top = c2.centre - c2.tangent * (c2.shape.h_post / 2 + c2.shape.dens_height * 0.8)
    out.append(
        _bone(ellipse(*(top + n2 * (c2.shape.width / 2 + 4)), 4.5, 6.5, 0.0, 32), 12.0, 2.5, 1.0)
    )
    out.append(
        _bone(ellipse(*(top - n2 * (c2.shape.width + 18)), 11.0, 4.5, 0.2, 32), 14.0, 2.5, 1.0)
    )
    # Shoulders overlap the cervicothoracic junction.
    idx = next(i for i, p in enumerate(placed) if p.label in ("C7", "T1"))
    sh = cent[idx] + tang[idx] * rng.uniform(0, 30) - norm[idx] * rng.uniform(0, 25)
    shoulders = ellipse(*sh, rng.uniform(90, 130), rng.uniform(45, 70), rng.uniform(-0.3, 0.3), 96)
    out.append(_soft(shoulders, MU_SOFT, rng.uniform(60, 140), 40.0))
    for _ in range(2):
        hc = sh + rng.normal(0, 15, 2)
        humerus = ellipse(*hc, rng.uniform(20, 26), rng.uniform(20, 26), 0.0, 48)
        out.append(_bone(humerus, 40.0, 12.0, 2.0, coarse=True))
    return out, wall


def _trunk(
    region: str, placed: list[_Placed], axis: _Axis, rng: np.random.Generator
) -> list[Structure]:
    """Trunk soft tissue and the ribs sweeping forward and down across the spine."""
    cent, tang, norm, widths = axis.cent, axis.tang, axis.norm, axis.widths
    front = widths / 2 + (rng.uniform(60, 120) if region == "lumbar" else rng.uniform(150, 190))
    back = widths / 2 + rng.uniform(60, 90)
    out = [_soft(axis.band(front, back), MU_SOFT * 0.9, rng.uniform(280, 380), 80.0)]
    for i in _thoracic(placed):
        for side in range(2):
            c = cent[i] + norm[i] * rng.uniform(40, 70) + tang[i] * rng.uniform(20, 50)
            rib = arc_band(
                *c,
                rng.uniform(80, 120),
                rng.uniform(50, 80),
                rng.uniform(-0.5, -0.2) + side * 0.05,
                2.3,
                4.4,
                rng.uniform(7, 10),
            )
            out.append(
                _bone(rib, 12.0, 3.0, 1.0, mu=MU_CANCELLOUS * 0.8, shell_mu=MU_CORTICAL * 0.8)
            )
    return out


def _thoracic(placed: list[_Placed]) -> list[int]:
    return [i for i, p in enumerate(placed) if p.label.startswith("T")]


def _thorax(placed: list[_Placed], axis: _Axis, rng: np.random.Generator) -> list[Structure]:
    """Two lung fields over and in front of the thoracic spine, and the heart."""
    t_idx = _thoracic(placed)
    apex, base = axis.cent[t_idx[0]], axis.cent[t_idx[-1]]
    mid = (apex + base) / 2
    ax = base - apex
    length = float(np.linalg.norm(ax))
    n_mid = axis.norm[len(placed) // 2]
    ap_angle = float(np.arctan2(n_mid[1], n_mid[0]))  # ellipse x-radius runs front-back
    out = []
    for s in range(2):
        lc = mid + n_mid * rng.uniform(25, 45) - ax / length * rng.uniform(0, 20)
        lung = ellipse(
            *lc,
            rng.uniform(95, 115),
            length * rng.uniform(0.5, 0.58),
            ap_angle + rng.uniform(-0.1, 0.1),
            96,
        )
        out.append(_soft(lung, MU_AIR, rng.uniform(120, 170) - 30 * s, 50.0))
    hc = mid + n_mid * rng.uniform(70, 95) + ax / length * rng.uniform(30, 70)
    heart = ellipse(*hc, rng.uniform(55, 70), rng.uniform(50, 65), rng.uniform(-0.5, 0.5), 64)
    out.append(_soft(heart, MU_SOFT, rng.uniform(90, 120), 40.0))
    return out


def _pelvis(placed: list[_Placed], axis: _Axis, rng: np.random.Generator) -> list[Structure]:
    """The sacrum below S1, the iliac crests, and bowel gas in front."""
    s1 = placed[-1]
    n1 = s1.normal
    w1, h1 = s1.shape.width, s1.shape.h_post
    sac = s1.centre + s1.tangent * (h1 / 2 + 1.5)  # S2 to the coccyx, below the S1 body
    pts = np.array(
        [
            sac - n1 * w1 * 0.5,
            sac + n1 * w1 * 0.3,
            sac - n1 * w1 * 0.1 + s1.tangent * 65,
            sac - n1 * w1 * 0.45 + s1.tangent * 60,
        ]
    )
    out = [_bone(smooth_closed(resample_closed(pts, 64), 3), 40.0, 8.0, 1.2, texture=0.3)]
    l4 = next(p for p in placed if p.label == "L4")
    for _ in range(2):
        ic = l4.centre + l4.tangent * rng.uniform(40, 70) + n1 * rng.uniform(-20, 25)
        crest = arc_band(
            *ic,
            rng.uniform(70, 95),
            rng.uniform(55, 75),
            rng.uniform(-0.3, 0.3),
            3.5,
            6.0,
            rng.uniform(10, 16),
        )
        out.append(_bone(crest, 30.0, 4.0, 1.5))
    for _ in range(int(rng.integers(2, 9))):
        j = int(rng.integers(0, len(placed)))
        gc = axis.cent[j] + axis.norm[j] * rng.uniform(40, 110) + axis.tang[j] * rng.normal(0, 20)
        gas = ellipse(*gc, rng.uniform(6, 25), rng.uniform(5, 18), rng.uniform(0, 3), 32)
        out.append(_soft(gas, MU_AIR, rng.uniform(15, 40), 8.0))
    return out
