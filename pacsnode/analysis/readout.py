"""The ER read-out of a lateral film: sagittal alignment by Cobb's method, the anterior and
posterior vertebral body lines, spondylolisthesis by Meyerding, prevertebral soft tissue,
and the critical findings among them, all from the body corners the stack already finds.

Points are film (x, y) pixels with pixel centres at +0.5, as in the SR. Every length is in
the read-out's ``unit``: mm when the film has a square pixel spacing, pixels otherwise (then
no mm threshold is applied, so no step-off or soft-tissue flag is raised). The geometry
functions take any consistent coordinates, so the phantoms' truth is computed by the same
definitions from the true corners in mm.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.ensemble import Origin
from pacsnode.analysis.findings import Finding
from pacsnode.analysis.measure import BodyHeights
from pacsnode.analysis.naming import SPINE_ORDER

__all__ = [
    "COBB_SPANS",
    "FLAG_KINDS",
    "MEYERDING_BOUNDS",
    "SLIP_FLOOR_PERCENT",
    "SOFT_TISSUE_LEVELS",
    "STEP_OFF_LIMIT_MM",
    "CobbAngle",
    "Corners",
    "Flag",
    "ReadOut",
    "Slip",
    "SoftTissue",
    "StepOff",
    "airway_distance",
    "build_readout",
    "cobb_degrees",
    "corners_of",
    "meyerding_grade",
    "shared_step",
    "slip_percent",
    "step_offs_between",
]

Point = tuple[float, float]

COBB_SPANS: tuple[tuple[str, str, str, str], ...] = (
    # (upper vertebra, its endplate, lower vertebra, its endplate)
    ("C2", "inferior", "C7", "inferior"),
    ("T4", "superior", "T12", "inferior"),
    ("L1", "superior", "S1", "superior"),
)
"""The sagittal angles read when both vertebrae are named: C2-C7 between the inferior
endplates of C2 and C7, T4-T12 between the superior endplate of T4 and the inferior one of
T12, L1-S1 between the superior endplates of L1 and S1."""

STEP_OFF_LIMIT_MM = 3.0
"""A step-off (:func:`shared_step`) over this is flagged as malalignment."""

SOFT_TISSUE_LEVELS: Mapping[str, float] = {"C2": 7.0, "C6": 22.0}
"""Adult upper limits (mm) of prevertebral soft tissue, from the anterior-inferior corner."""

MEYERDING_BOUNDS = (25.0, 50.0, 75.0, 100.0)
"""Meyerding's grades: I up to 25 %, II to 50 %, III to 75 %, IV to 100 %, V beyond."""

SLIP_FLOOR_PERCENT = 10.0
"""A slip under this is read as none (grade 0), so a normal level does not read as grade I:
normal levels vary by that much (the phantoms' normal cervical levels run from -13 % to
+9 %, 5th to 95th percentile, from the tilt of one body against the next), and it is
1.5 to 3.5 mm over a cervical or lumbar endplate, about what a reader calls a slip."""

FLAG_KINDS = ("malalignment", "soft_tissue", "fracture_grade3", "listhesis_grade2")
"""The critical findings, as named in ``[[notify]] on``."""


@dataclass(frozen=True)
class Corners:
    """The four body corners of one vertebra, (x, y) in any one coordinate system."""

    anterior_superior: Point
    anterior_inferior: Point
    posterior_superior: Point
    posterior_inferior: Point
    superior_plate: tuple[Point, Point] | None = None
    """The superior endplate fitted along its length, (posterior, anterior) end; None to
    take the corners (the truth, where the corners are exact)."""
    inferior_plate: tuple[Point, Point] | None = None

    def array(self, name: str) -> NDArray[np.float64]:
        return np.asarray(getattr(self, name), np.float64)

    @property
    def front(self) -> NDArray[np.float64]:
        """Unit vector from the posterior wall's middle to the anterior wall's."""
        a = (self.array("anterior_superior") + self.array("anterior_inferior")) / 2
        p = (self.array("posterior_superior") + self.array("posterior_inferior")) / 2
        return _unit(a - p)

    @property
    def down(self) -> NDArray[np.float64]:
        """Unit vector from the superior endplate's middle to the inferior one's."""
        s = (self.array("anterior_superior") + self.array("posterior_superior")) / 2
        i = (self.array("anterior_inferior") + self.array("posterior_inferior")) / 2
        return _unit(i - s)

    def endplate(self, which: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(posterior, anterior) corner of the ``"superior"`` or ``"inferior"`` endplate."""
        if which not in ("superior", "inferior"):
            raise ValueError(f"an endplate is superior or inferior, not {which!r}")
        return self.array(f"posterior_{which}"), self.array(f"anterior_{which}")

    def plate(self, which: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The endplate's line for angles: the fitted one when there is one, else the
        corners (:meth:`endplate`)."""
        fitted = self.superior_plate if which == "superior" else self.inferior_plate
        if fitted is None:
            return self.endplate(which)
        return np.asarray(fitted[0], np.float64), np.asarray(fitted[1], np.float64)


def corners_of(heights: BodyHeights) -> Corners:
    """The corners the stack measured on a body."""
    return Corners(
        heights.anterior_superior,
        heights.anterior_inferior,
        heights.posterior_superior,
        heights.posterior_inferior,
        heights.superior_endplate,
        heights.inferior_endplate,
    )


def _unit(vector: NDArray[np.float64]) -> NDArray[np.float64]:
    norm = float(np.hypot(*vector))
    if norm == 0.0:
        raise ValueError("two corners coincide: no direction")
    return vector / norm


def _tilt(endplate: tuple[NDArray[np.float64], NDArray[np.float64]], down, front) -> float:
    """Angle (radians) of an endplate from the anterior direction, positive when its
    anterior end lies further down the spine than its posterior end."""
    vector = endplate[1] - endplate[0]
    return math.atan2(float(vector @ down), float(vector @ front))


def cobb_degrees(upper: Corners, upper_plate: str, lower: Corners, lower_plate: str) -> float:
    """Signed Cobb angle between an endplate of ``upper`` and one of ``lower``, in degrees:
    positive for lordosis (the lines open towards the front), negative for kyphosis.

    The frame is the mean of the two bodies' own (down, front) directions, so the angle
    does not depend on how the film is turned or which way the patient faces.
    """
    down = _unit(upper.down + lower.down)
    front = _unit(upper.front + lower.front)
    front = _unit(front - (front @ down) * down)
    angle = _tilt(lower.plate(lower_plate), down, front) - _tilt(
        upper.plate(upper_plate), down, front
    )
    return math.degrees(angle)


def step_offs_between(upper: Corners, lower: Corners) -> tuple[float, float]:
    """(anterior, posterior) step of the vertebral body lines from ``upper`` to the body
    below it: the anterior-inferior corner of ``upper`` against the anterior-superior
    corner of ``lower`` (and the posterior pair), measured along the two bodies' mean front
    direction. Positive when ``upper`` lies forward of ``lower``."""
    front = _unit(upper.front + lower.front)
    anterior = (upper.array("anterior_inferior") - lower.array("anterior_superior")) @ front
    posterior = (upper.array("posterior_inferior") - lower.array("posterior_superior")) @ front
    return float(anterior), float(posterior)


def shared_step(anterior: float, posterior: float) -> float:
    """The step-off of a body against the one below: the shift both vertebral lines share,
    signed (the smaller step when the two lines step the same way, 0 when they step
    opposite ways).

    A body translated on the one below (a subluxation, a listhesis) steps both lines by
    the same amount; a step in one line alone is that line's corner (an osteophyte, a
    wedge, a corner lost under a pedicle), not a shift of the column. On validation
    phantoms (seed 3000, 342 pairs) the larger of the two lines' steps misread a normal
    pair as over 3 mm 42 times, the shared step twice.
    """
    if anterior * posterior <= 0:
        return 0.0
    return math.copysign(min(abs(anterior), abs(posterior)), anterior)


def slip_percent(upper: Corners, lower: Corners) -> float:
    """Spondylolisthesis of ``upper`` on ``lower``: the step-off of the two bodies
    (:func:`shared_step` of :func:`step_offs_between`, forward positive) as a percentage
    of ``lower``'s superior endplate length, Meyerding's measure. Negative for a
    retrolisthesis.

    Meyerding compares the posterior corners alone; the anterior pair is compared too and
    the shift both share is the slip, so a posterior corner misplaced under the pedicles
    does not read as a slip. Both are measured across the disc along the two bodies' mean
    front, so a wedge-shaped disc does not add to either.
    """
    back, front = lower.endplate("superior")
    length = float(np.hypot(*(front - back)))
    if length == 0.0:
        raise ValueError("the lower body's superior endplate has no length")
    return shared_step(*step_offs_between(upper, lower)) / length * 100.0


def meyerding_grade(percent: float) -> int:
    """Meyerding's grade (1-5) of a slip percentage; 0 under :data:`SLIP_FLOOR_PERCENT`."""
    if percent < SLIP_FLOOR_PERCENT:
        return 0
    for grade, bound in enumerate(MEYERDING_BOUNDS, start=1):
        if percent <= bound:
            return grade
    return 5


@dataclass(frozen=True)
class CobbAngle:
    """A sagittal angle between two named endplates.

    Attributes
    ----------
    upper, lower
        The vertebrae ("C2", "C7").
    upper_endplate, lower_endplate
        Which endplate of each: "superior" or "inferior".
    degrees
        Signed: positive is lordosis, negative kyphosis.
    upper_line, lower_line
        The endplates drawn: ((x, y) posterior corner, (x, y) anterior corner), film pixels.
    """

    upper: str
    upper_endplate: str
    lower: str
    lower_endplate: str
    degrees: float
    upper_line: tuple[Point, Point]
    lower_line: tuple[Point, Point]

    @property
    def curvature(self) -> str:
        return "lordosis" if self.degrees >= 0 else "kyphosis"

    @property
    def span(self) -> str:
        return f"{self.upper}-{self.lower}"

    def describe(self) -> str:
        return f"{self.span} {self.curvature} {abs(self.degrees):.0f} deg"


@dataclass(frozen=True)
class StepOff:
    """The anterior and posterior vertebral lines across one disc.

    Attributes
    ----------
    upper, lower
        Labels of the two bodies (names, or positions "V3").
    anterior, posterior
        Signed steps of each line in the read-out's unit, positive when ``upper`` lies
        forward; the step-off itself is what both share (:attr:`shift`).
    anterior_points, posterior_points
        The corner pairs compared: ((x, y) of ``upper``, (x, y) of ``lower``), film pixels.
    """

    upper: str
    lower: str
    anterior: float
    posterior: float
    anterior_points: tuple[Point, Point]
    posterior_points: tuple[Point, Point]

    @property
    def shift(self) -> float:
        """The step-off: the shift both lines share, signed (:func:`shared_step`)."""
        return shared_step(self.anterior, self.posterior)

    @property
    def largest(self) -> float:
        """The step-off's size, unsigned: what is flagged over :data:`STEP_OFF_LIMIT_MM`."""
        return abs(self.shift)

    @property
    def level(self) -> str:
        return f"{self.upper}/{self.lower}"


@dataclass(frozen=True)
class Slip:
    """Spondylolisthesis at one level.

    Attributes
    ----------
    upper, lower
        The slipping body and the one below.
    percent
        Slip over the lower body's superior endplate length (negative: retrolisthesis).
    grade
        Meyerding 1-5, 0 for none (:func:`meyerding_grade`).
    """

    upper: str
    lower: str
    percent: float
    grade: int

    @property
    def level(self) -> str:
        return f"{self.upper}/{self.lower}"


@dataclass(frozen=True)
class SoftTissue:
    """Prevertebral soft tissue at one level.

    Attributes
    ----------
    level
        "C2" or "C6".
    thickness
        From the body's anterior-inferior corner to the airway's posterior wall along the
        perpendicular to the anterior line, in the read-out's unit.
    corner, airway
        The two ends of that distance, (x, y) film pixels.
    """

    level: str
    thickness: float
    corner: Point
    airway: Point


@dataclass(frozen=True)
class Flag:
    """A critical finding.

    Attributes
    ----------
    kind
        One of :data:`FLAG_KINDS`.
    level
        Where: "C4/C5", "C6", "L1".
    severity
        "high" for every flag raised here; kept so that milder findings can join later.
    text
        One line a clinician reads ("step-off 4.1 mm at C4/C5").
    """

    kind: str
    level: str
    severity: str
    text: str


@dataclass(frozen=True)
class ReadOut:
    """Everything the ER read-out found on one film.

    Attributes
    ----------
    unit
        "mm" or "px": the unit of every length here.
    mm_per_pixel
        The spacing used, None for pixels.
    cobb
        The Cobb angles whose two vertebrae were named.
    step_offs
        One per pair of adjacent measured bodies, head first, except the levels in
        ``alignment_not_read``.
    slips
        One per pair as for ``step_offs``.
    soft_tissue
        At C2 and C6 when they are named and the airway was found.
    flags
        The critical findings.
    impression
        One sentence summing the film up, also written to the audit log.
    alignment_not_read
        Levels ("C6/C7") of adjacent bodies not read for step-off or slip, because one of
        the two was outlined by the semantic path alone (:data:`ONE_PATH_ONLY`).
    """

    unit: str
    mm_per_pixel: float | None
    cobb: tuple[CobbAngle, ...]
    step_offs: tuple[StepOff, ...]
    slips: tuple[Slip, ...]
    soft_tissue: tuple[SoftTissue, ...]
    flags: tuple[Flag, ...]
    impression: str
    alignment_not_read: tuple[str, ...] = ()

    def flagged(self, kinds: Sequence[str]) -> tuple[Flag, ...]:
        """The flags of the given kinds."""
        return tuple(f for f in self.flags if f.kind in kinds)


# --------------------------------------------------------------------------------------------
# The read-out of a film


class _Body(Protocol):
    """What the read-out needs of a :class:`~pacsnode.analysis.reading.Vertebra`."""

    label: str
    identified: bool
    centroid: tuple[float, float]
    heights: BodyHeights | None
    finding: Finding | None
    origin: str


ONE_PATH_ONLY = frozenset({Origin.SEMANTIC_LEFTOVER.value})
"""Ensemble origins (:class:`~pacsnode.analysis.ensemble.Origin`) of outlines that only
the semantic path drew: a piece of the whole-spine UNet's blob that no detected
vertebra's patch mask confirmed, its corners where the blob happened to be split. The
levels beside such a body are not read for alignment (step-off and slip) and are listed
as not read; its heights, grade and Cobb endplates are kept. On validation phantoms (seeds
3000 to 3003, randomised and classic, 240 films) 49 of 2282 bodies were such outlines.
Not reading beside them left 42 of 1996 pairs unread and took Meyerding's kappa from 0.712
to 0.812, films wrongly flagged for malalignment from 5 to 3 of 218 and for a slip of
grade II or more from 4 to 2 of 232: among those pairs were slips read as 117 %, 31 % and
22 % where the truth was 0 %, 21 % and 0 %. One true step-off over 3 mm was among them
(found 19 of 22 films with one, then 18)."""


ADJACENT_PITCH = 1.75
"""Two bodies are neighbours (no body missed between them) when their centroids are less
than this many mean body heights apart: a body and its disc span about 1.3 heights."""


def _adjacent(upper: _Body, lower: _Body) -> bool:
    assert upper.heights is not None and lower.heights is not None
    if upper.identified and lower.identified:
        if upper.label not in SPINE_ORDER or lower.label not in SPINE_ORDER:
            return False
        if SPINE_ORDER.index(lower.label) - SPINE_ORDER.index(upper.label) != 1:
            return False
    gap = math.dist(upper.centroid, lower.centroid)
    return gap < ADJACENT_PITCH * (upper.heights.tallest + lower.heights.tallest) / 2


def _point(p: NDArray[np.float64]) -> Point:
    return (float(p[0]), float(p[1]))


AIRWAY_SEARCH = 3.0
"""How far in front of a body's anterior-inferior corner the airway is looked for, in that
body's endplate lengths (about 45 to 50 mm at C2 and C6: past any swelling)."""
AIRWAY_CONTRAST = 0.04
"""The airway's posterior wall must darken the film by at least this share of the profile's
median level (averaged over :data:`AIRWAY_EDGE` either side)."""
AIRWAY_EDGE = 0.2
"""The windows either side of a candidate wall, in endplate lengths (about 3 mm)."""
AIRWAY_LUMEN = 0.2
"""The air column must stay dark this far past the wall, in endplate lengths (about 3 mm;
the oropharynx narrows where C1's arch and the mandible cross it): a thin dark line, or a
dip between two bright edges, is not the airway."""
AIRWAY_SKIP = 0.06
"""The cortex and the corner's own edge are skipped, in endplate lengths (about 1 mm)."""
# The four were chosen on validation phantoms (seed 3000, cervical, randomised and classic
# families) by a sweep of the four; never on the test seed or a held-out family.
AIRWAY_NEAREST = {"C6": 0.3}
"""Per level, how near the body the wall may lie, in endplate lengths (about 4.5 mm at C6),
where that is further than :data:`AIRWAY_SKIP`. In front of C6 the oesophagus lies
between the spine and the airway, so the airway wall is never against the body (normal
adults: 9 mm or more); nearer, the fall of the body's own cortex into the soft tissue was
taken for the wall. On the validation films of seed 3000 (29 cervical films in two
families) the mean error at C2 and C6 fell from 2.88 to 1.30 mm, alike for 0.25 to 0.4."""
AIRWAY_ONSET = {"C2": 0.1}
"""Per level, the share of the fall from the soft tissue's level to the air column's at
which the wall is placed, instead of the steepest fall. The airway is a tube: the path
through air grows from its wall like a chord, steeply at first and then slowly, so the
smoothed profile falls steepest inside the lumen, past the wall. On validation phantoms
(seeds 3000 to 3003, randomised and classic, 85 readings at C2 and 84 at C6) the C2 error
was 1.79 mm mean (median +0.68 mm, 15 readings over 7 mm that were not) at the steepest
fall, 1.52 mm (median +0.05, 7 such readings, and one of 8 swollen C2s read under 7 mm)
at 0.1, 1.57 at 0.2, 1.74 at 0.5; at C6 every share read worse than the steepest fall
(2.14 mm against 2.21 to 2.27), so C6 keeps it."""


def airway_distance(
    image: NDArray[np.floating],
    corners: Corners,
    *,
    band: float = 0.08,
    nearest: float = AIRWAY_SKIP,
    onset: float | None = None,
) -> tuple[float, Point] | None:
    """Distance (pixels) from a body's anterior-inferior corner to the airway's posterior
    wall along the perpendicular to the body's anterior wall, and the wall's point (x, y);
    None when no airway is found.

    The film (bone bright) is sampled along that ray, averaged across a band ``band``
    endplate lengths either side, and smoothed. The wall is the first edge past the cortex
    where the film darkens by :data:`AIRWAY_CONTRAST` of its level and stays dark for
    :data:`AIRWAY_LUMEN`, placed at the steepest fall within the edge, or with ``onset`` at
    the first sample that has fallen that share of the way from the tissue's level to the
    air column's (:data:`AIRWAY_ONSET`). No wall is looked
    for nearer the corner than ``nearest`` endplate lengths (:data:`AIRWAY_NEAREST`). Every
    length scales with the body's endplate, so films with and without a pixel spacing are
    read alike.
    """
    from scipy.ndimage import gaussian_filter1d, map_coordinates

    back, front_corner = corners.endplate("inferior")
    width = float(np.hypot(*(front_corner - back)))
    if width < 4.0:
        return None
    start = corners.array("anterior_inferior")
    wall = _unit(start - corners.array("anterior_superior"))
    ray = np.array([wall[1], -wall[0]])
    if ray @ corners.front < 0:
        ray = -ray
    step = 0.5
    t = np.arange(0.0, AIRWAY_SEARCH * width, step)
    offsets = np.linspace(-band * width, band * width, 7)
    xs = start[0] + t[None, :] * ray[0] + offsets[:, None] * wall[0]
    ys = start[1] + t[None, :] * ray[1] + offsets[:, None] * wall[1]
    # Film coordinates have pixel centres at +0.5; map_coordinates indexes them at 0.
    samples = map_coordinates(
        np.asarray(image, np.float32), [ys.ravel() - 0.5, xs.ravel() - 0.5], order=1, cval=np.nan
    ).reshape(xs.shape)
    inside = np.isfinite(samples).all(axis=0)
    end = len(t) if inside.all() else int(np.argmin(inside))
    edge = max(2, int(AIRWAY_EDGE * width / step))
    lumen = max(edge, int(AIRWAY_LUMEN * width / step))
    first = math.ceil(max(AIRWAY_SKIP, nearest) * width / step)
    if end < first + lumen + 4:
        return None
    profile = gaussian_filter1d(samples[:, :end].mean(axis=0), sigma=max(1.0, 0.03 * width / step))
    slope = np.gradient(profile)
    level = float(np.median(profile))
    fall = np.full(len(profile), -np.inf)
    for k in range(first + 2, len(profile) - lumen):
        fall[k] = profile[max(first, k - edge) : k].mean() - profile[k : k + edge].mean()
    for k in range(first + 3, len(profile) - lumen - 1):
        if not (fall[k] >= fall[k - 1] and fall[k] >= fall[k + 1]):
            continue
        if fall[k] < AIRWAY_CONTRAST * level:
            continue
        before = profile[max(first, k - edge) : k].mean()
        if profile[k : k + lumen].mean() > before - 0.5 * fall[k]:
            continue
        lo = max(first, k - edge)
        j = lo + int(np.argmin(slope[lo : k + edge]))
        if onset is not None:
            below = before - onset * (before - float(profile[k : k + lumen].mean()))
            fallen = profile[lo : j + 1] <= below
            if fallen.any():
                j = lo + int(np.argmax(fallen))
        distance = float(t[j])
        return distance, _point(start + distance * ray)
    return None


def build_readout(
    vertebrae: Sequence[_Body],
    image: NDArray[np.floating] | None,
    mm_per_pixel: float | None,
) -> ReadOut:
    """The read-out of a chain of vertebrae sorted head first.

    Parameters
    ----------
    vertebrae
        The stack's vertebrae (:class:`~pacsnode.analysis.reading.Vertebra`); those
        without heights are skipped.
    image
        The film (rows, cols) in [0, 1], bone bright, for the airway; None skips soft
        tissue.
    mm_per_pixel
        The film's square pixel spacing; None reads lengths in pixels and raises no flag
        that needs millimetres.
    """
    scale = 1.0 if mm_per_pixel is None else float(mm_per_pixel)
    unit = "px" if mm_per_pixel is None else "mm"
    measured = [v for v in vertebrae if v.heights is not None]
    corners = [corners_of(v.heights) for v in measured]  # type: ignore[arg-type]
    named = {v.label: c for v, c in zip(measured, corners, strict=True) if v.identified}

    cobb = []
    for upper, upper_plate, lower, lower_plate in COBB_SPANS:
        if upper in named and lower in named:
            a, b = named[upper], named[lower]
            try:
                degrees = cobb_degrees(a, upper_plate, b, lower_plate)
            except ValueError:
                continue
            line_a = tuple(_point(p) for p in a.plate(upper_plate))
            line_b = tuple(_point(p) for p in b.plate(lower_plate))
            cobb.append(CobbAngle(upper, upper_plate, lower, lower_plate, degrees, line_a, line_b))  # type: ignore[arg-type]

    steps, slips, not_read = [], [], []
    for (upper, a), (lower, b) in itertools.pairwise(zip(measured, corners, strict=True)):
        if not _adjacent(upper, lower):
            continue
        if upper.origin in ONE_PATH_ONLY or lower.origin in ONE_PATH_ONLY:
            not_read.append(f"{upper.label}/{lower.label}")
            continue
        try:
            anterior, posterior = step_offs_between(a, b)
            percent = slip_percent(a, b)
        except ValueError:
            continue
        steps.append(
            StepOff(
                upper.label,
                lower.label,
                anterior * scale,
                posterior * scale,
                (a.anterior_inferior, b.anterior_superior),
                (a.posterior_inferior, b.posterior_superior),
            )
        )
        slips.append(Slip(upper.label, lower.label, percent, meyerding_grade(percent)))

    soft = []
    if image is not None:
        for level in SOFT_TISSUE_LEVELS:
            if level not in named:
                continue
            found = airway_distance(
                image,
                named[level],
                nearest=AIRWAY_NEAREST.get(level, AIRWAY_SKIP),
                onset=AIRWAY_ONSET.get(level),
            )
            if found is not None:
                distance, wall = found
                soft.append(
                    SoftTissue(level, distance * scale, named[level].anterior_inferior, wall)
                )

    flags = _flags(steps, slips, soft, measured, unit)
    return ReadOut(
        unit=unit,
        mm_per_pixel=mm_per_pixel,
        cobb=tuple(cobb),
        step_offs=tuple(steps),
        slips=tuple(slips),
        soft_tissue=tuple(soft),
        flags=flags,
        impression=_impression(cobb, steps, slips, soft, measured, unit, not_read),
        alignment_not_read=tuple(not_read),
    )


_MEYERDING_NAMES = ("none", "I", "II", "III", "IV", "V")


def _flags(
    steps: Sequence[StepOff],
    slips: Sequence[Slip],
    soft: Sequence[SoftTissue],
    measured: Sequence[_Body],
    unit: str,
) -> tuple[Flag, ...]:
    flags = []
    if unit == "mm":  # the limits are adult millimetres: without spacing nothing is flagged
        for step in steps:
            if step.largest > STEP_OFF_LIMIT_MM:
                way = "forward" if step.shift > 0 else "backward"
                flags.append(
                    Flag(
                        "malalignment",
                        step.level,
                        "high",
                        f"step-off {step.largest:.1f} mm at {step.level} ({step.upper} {way})",
                    )
                )
        for tissue in soft:
            limit = SOFT_TISSUE_LEVELS[tissue.level]
            if tissue.thickness > limit:
                flags.append(
                    Flag(
                        "soft_tissue",
                        tissue.level,
                        "high",
                        f"prevertebral soft tissue {tissue.thickness:.0f} mm at {tissue.level} "
                        f"(over {limit:.0f} mm)",
                    )
                )
    for slip in slips:
        if slip.grade >= 2:
            flags.append(
                Flag(
                    "listhesis_grade2",
                    slip.level,
                    "high",
                    f"{slip.level} anterolisthesis {slip.percent:.0f} % "
                    f"(Meyerding {_MEYERDING_NAMES[slip.grade]})",
                )
            )
    for body in measured:
        if body.finding is not None and body.finding.grade == 3:
            flags.append(
                Flag(
                    "fracture_grade3",
                    body.label,
                    "high",
                    f"{body.label} grade 3 {body.finding.deformity.value} deformity",
                )
            )
    return tuple(flags)


def _impression(
    cobb: Sequence[CobbAngle],
    steps: Sequence[StepOff],
    slips: Sequence[Slip],
    soft: Sequence[SoftTissue],
    measured: Sequence[_Body],
    unit: str,
    not_read: Sequence[str],
) -> str:
    if not measured:
        return "no vertebral body measured"
    parts = [angle.describe() for angle in cobb]
    if steps and unit == "mm":
        over = [s for s in steps if s.largest > STEP_OFF_LIMIT_MM]
        if over:
            parts.extend(f"step-off {s.largest:.1f} mm at {s.level}" for s in over)
        else:
            parts.append(f"no step-off over {STEP_OFF_LIMIT_MM:.0f} mm")
    elif steps:
        parts.append(f"largest step-off {max(s.largest for s in steps):.0f} px (no pixel spacing)")
    if not_read:
        parts.append(f"alignment not read at {', '.join(not_read)} (outline from one path only)")
    parts.extend(
        f"{s.level} anterolisthesis {s.percent:.0f} % (Meyerding {_MEYERDING_NAMES[s.grade]})"
        for s in slips
        if s.grade >= 1
    )
    if soft:
        parts.append(
            "prevertebral soft tissue "
            + ", ".join(f"{t.thickness:.0f} {unit} at {t.level}" for t in soft)
        )
    parts.extend(
        f"{b.label} grade {b.finding.grade} {b.finding.deformity.value}"
        for b in measured
        if b.finding is not None and b.finding.grade >= 1
    )
    return "; ".join(parts) if parts else "no finding measured"
