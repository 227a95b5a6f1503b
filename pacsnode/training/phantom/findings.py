"""The ER read-out's findings on a phantom film (spondylolisthesis, a traumatic step-off,
prevertebral swelling, a straightened or kyphotic neck) and the film's read-out truth,
measured on the true corners by the node's own definitions (:mod:`pacsnode.analysis.readout`).

The findings come from a random stream of their own (:func:`findings_rng`), so that every
other draw of a film, and so its anatomy where it has no finding, stays what it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.naming import SPINE_ORDER
from pacsnode.analysis.readout import (
    COBB_SPANS,
    SOFT_TISSUE_LEVELS,
    STEP_OFF_LIMIT_MM,
    Corners,
    cobb_degrees,
    meyerding_grade,
    shared_step,
    slip_percent,
    step_offs_between,
)

if TYPE_CHECKING:
    from pacsnode.training.phantom.anatomy import VertebraTruth

__all__ = [
    "FINDINGS_ENTROPY",
    "NO_FINDINGS",
    "Findings",
    "Translation",
    "draw_findings",
    "findings_rng",
    "readout_truth",
    "soft_tissue_ray",
]

FINDINGS_ENTROPY = 15
"""Mixed into a film's seed for the findings' stream (issue 15, the ER read-out)."""

_SLIP_LEVELS = {
    "lumbar": ((("L4", "L5"), 0.45), (("L5", "S1"), 0.40), (("L3", "L4"), 0.15)),
    "cervical": ((("C3", "C4"), 0.3), (("C4", "C5"), 0.4), (("C5", "C6"), 0.3)),
}
_STEP_LEVELS = {
    "lumbar": (
        (("T12", "L1"), 0.2),
        (("L1", "L2"), 0.2),
        (("L2", "L3"), 0.15),
        (("L3", "L4"), 0.15),
        (("L4", "L5"), 0.15),
        (("L5", "S1"), 0.15),
    ),
    "cervical": (
        (("C2", "C3"), 0.1),
        (("C3", "C4"), 0.15),
        (("C4", "C5"), 0.2),
        (("C5", "C6"), 0.25),
        (("C6", "C7"), 0.2),
        (("C7", "T1"), 0.1),
    ),
}
# How often a film of the region has a slip, else a step-off (never both).
_SLIP_RATE = {"lumbar": 0.20, "cervical": 0.06}
_STEP_RATE = {"lumbar": 0.12, "cervical": 0.15}
SWOLLEN_RATE = 0.18
"""Share of cervical films with prevertebral swelling at C2, C6 or both."""
# Normal adult prevertebral soft tissue (mm) at C2 and C6, and the range a swollen level
# reaches beyond its limit (SOFT_TISSUE_LEVELS).
_NORMAL_MM = {"C2": (2.0, 6.0), "C6": (9.0, 18.0)}
_SWOLLEN_EXCESS_MM = {"C2": 7.0, "C6": 12.0}


@dataclass(frozen=True)
class Translation:
    """The vertebrae above a disc moved together over the body below it.

    Attributes
    ----------
    kind
        "slip" (spondylolisthesis) or "step" (a traumatic translation).
    upper, lower
        The two bodies either side of the disc.
    amount
        Slip: percent of the lower body's superior endplate; step: mm. Positive forward
        (along the lower body's anterior direction), negative backward.
    """

    kind: str
    upper: str
    lower: str
    amount: float

    def mm(self, endplate_mm: float) -> float:
        """The translation in mm, given the length (mm) of the lower body's superior
        endplate between its corners."""
        return self.amount / 100.0 * endplate_mm if self.kind == "slip" else self.amount


@dataclass(frozen=True)
class Findings:
    """What a film is drawn with, beyond the anatomy of its main stream.

    Attributes
    ----------
    translation
        A slip or a step-off at one disc, or None.
    prevertebral_mm
        Cervical films: the soft tissue (mm) drawn in front of C2 and C6, from the
        anterior-inferior corner along the perpendicular to the anterior wall; None keeps
        the renderer's default airway.
    swollen
        The drawn thickness exceeds its limit at C2 or C6.
    cervical_curvature
        A cervical curvature (1/mm, negative lordosis) replacing the drawn one, for a
        straightened or kyphotic neck; None keeps the drawn one.
    """

    translation: Translation | None = None
    prevertebral_mm: dict[str, float] | None = None
    swollen: bool = False
    cervical_curvature: float | None = None

    def as_json(self) -> dict[str, Any]:
        t = self.translation
        return {
            "translation": None
            if t is None
            else {
                "kind": t.kind,
                "level": f"{t.upper}/{t.lower}",
                "amount": round(t.amount, 4),
                "unit": "percent" if t.kind == "slip" else "mm",
            },
            "prevertebral_mm": None
            if self.prevertebral_mm is None
            else {k: round(v, 4) for k, v in self.prevertebral_mm.items()},
            "swollen": self.swollen,
            "cervical_curvature_per_mm": self.cervical_curvature,
        }


NO_FINDINGS = Findings()


def findings_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The findings' own generator for case ``(seed, index)``; ``stream`` keeps a second
    renderer's findings apart."""
    return np.random.default_rng([seed, index, FINDINGS_ENTROPY, *stream])


def _pick(levels: tuple[tuple[tuple[str, str], float], ...], u: float) -> tuple[str, str]:
    weights = np.cumsum([w for _, w in levels])
    return levels[int(np.searchsorted(weights / weights[-1], u, side="right"))][0]


def draw_findings(rng: np.random.Generator, region: str) -> Findings:
    """Draw the findings of one film of ``region``; chest films have none.

    A fixed number of draws, each finding from its own slots, so changing one finding's
    rate leaves the others as they were.
    """
    u = [float(x) for x in rng.random(14)]
    if region not in _SLIP_RATE:
        return NO_FINDINGS
    translation = None
    if u[0] < _SLIP_RATE[region]:
        upper, lower = _pick(_SLIP_LEVELS[region], u[1])
        if region == "cervical":
            percent = 3.0 + 32.0 * u[2]  # degenerative cervical slips stay small
        else:
            # Meyerding I-IV, a continuum weighted to the small slips seen most.
            lo, hi = ((3.0, 25.0), (25.0, 50.0), (50.0, 75.0), (75.0, 95.0))[
                int(np.searchsorted([0.5, 0.8, 0.95], u[3], side="right"))
            ]
            percent = lo + (hi - lo) * u[2]
        translation = Translation("slip", upper, lower, percent)
    elif u[0] < _SLIP_RATE[region] + _STEP_RATE[region]:
        upper, lower = _pick(_STEP_LEVELS[region], u[1])
        # 1-8 mm, with extra weight around the 3 mm limit so the threshold zone is full.
        size = 2.0 + 2.5 * u[2] if u[3] < 0.4 else 1.0 + 7.0 * u[2]
        translation = Translation("step", upper, lower, size if u[4] < 0.6 else -size)
    if region != "cervical":
        return Findings(translation=translation)

    thickness = {}
    swollen = bool(u[5] < SWOLLEN_RATE)
    which = ("C2",) if u[6] < 0.35 else ("C6",) if u[6] < 0.7 else ("C2", "C6")
    for k, level in enumerate(("C2", "C6")):
        a, b = u[7 + 2 * k], u[8 + 2 * k]
        limit = SOFT_TISSUE_LEVELS[level]
        if swollen and level in which:
            # Four in ten swollen levels lie within 1.5 mm of the limit.
            excess = 0.3 + 1.2 * a if b < 0.4 else 1.5 + (_SWOLLEN_EXCESS_MM[level] - 1.5) * a
            thickness[level] = limit + excess
        else:
            lo, hi = _NORMAL_MM[level]
            # One normal film in ten lies between the normal range and the limit.
            thickness[level] = lo + (hi - lo) * a if b >= 0.1 else hi + (limit - 0.2 - hi) * a
    curvature = None
    if u[11] < 0.15:
        curvature = -0.0012 + 0.002 * u[12]  # straightened
    elif u[11] < 0.30:
        curvature = 0.0008 + 0.0037 * u[12]  # kyphotic
    return Findings(translation, thickness, swollen, curvature)


# --------------------------------------------------------------------------------------------
# Truth


def _corners(v: VertebraTruth) -> Corners:
    c = v.corners
    return Corners(
        *(
            (float(c[k][0]), float(c[k][1]))
            for k in (
                "anterior_superior",
                "anterior_inferior",
                "posterior_superior",
                "posterior_inferior",
            )
        )
    )


def soft_tissue_ray(
    corners: Corners, wall: NDArray[np.float64], max_mm: float = 80.0
) -> tuple[float, NDArray[np.float64]] | None:
    """Prevertebral soft tissue of one body: from its anterior-inferior corner along the
    perpendicular to its anterior wall, pointing forward, to the first crossing of the
    airway's posterior ``wall`` (an open polyline). Returns (distance, crossing point) in
    the coordinates of ``corners`` and ``wall``, or None when the ray misses the wall
    within ``max_mm``."""
    origin = corners.array("anterior_inferior")
    along = origin - corners.array("anterior_superior")
    ray = np.array([along[1], -along[0]]) / float(np.hypot(*along))
    if ray @ corners.front < 0:
        ray = -ray
    a, b = wall[:-1], wall[1:]
    seg = b - a
    # origin + t * ray = a + s * seg, solved for every segment at once.
    det = seg[:, 0] * ray[1] - seg[:, 1] * ray[0]
    rel = a - origin
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (seg[:, 0] * rel[:, 1] - seg[:, 1] * rel[:, 0]) / det
        s = (ray[0] * rel[:, 1] - ray[1] * rel[:, 0]) / det
    # A ray through a vertex must not slip between its two segments by rounding.
    eps = 1e-9
    hit = (np.abs(det) > 1e-12) & (s >= -eps) & (s <= 1.0 + eps) & (t > 0.0) & (t <= max_mm)
    if not hit.any():
        return None
    best = float(t[hit].min())
    return best, origin + best * ray


def readout_truth(
    vertebrae: Sequence[VertebraTruth],
    *,
    spacing_mm: float,
    airway_wall: NDArray[np.float64] | None = None,
    field_mm: tuple[float, float, float, float] | None = None,
    findings: Findings = NO_FINDINGS,
) -> dict[str, Any]:
    """The ER read-out of a film from its true corners (image mm), by the definitions of
    :mod:`pacsnode.analysis.readout`.

    Parameters
    ----------
    vertebrae
        The bodies wholly in the film, head first, corners in image mm (x, y).
    spacing_mm
        The film's pixel spacing, to give points in pixels as the rest of the truth does.
    airway_wall
        The airway's posterior wall in image mm, an open polyline; None: no soft tissue.
    field_mm
        The collimated field (x0, y0, x1, y1) in image mm: a soft-tissue point outside it
        is not on the film, and is left out.
    findings
        What the film was drawn with, recorded beside the truth.
    """
    by_label = {v.label: v for v in vertebrae}
    corners = {v.label: _corners(v) for v in vertebrae}
    cobb = []
    for upper, upper_plate, lower, lower_plate in COBB_SPANS:
        if upper in corners and lower in corners:
            cobb.append(
                {
                    "span": f"{upper}-{lower}",
                    "upper": upper,
                    "upper_endplate": upper_plate,
                    "lower": lower,
                    "lower_endplate": lower_plate,
                    "degrees": round(
                        cobb_degrees(corners[upper], upper_plate, corners[lower], lower_plate), 4
                    ),
                }
            )
    steps, slips = [], []
    labels = [v.label for v in vertebrae]
    for upper, lower in pairwise(labels):
        if SPINE_ORDER.index(lower) != SPINE_ORDER.index(upper) + 1:
            continue
        anterior, posterior = step_offs_between(corners[upper], corners[lower])
        steps.append(
            {
                "upper": upper,
                "lower": lower,
                "anterior": round(anterior, 4),
                "posterior": round(posterior, 4),
            }
        )
        percent = slip_percent(corners[upper], corners[lower])
        slips.append(
            {
                "upper": upper,
                "lower": lower,
                "percent": round(percent, 4),
                "grade": meyerding_grade(percent),
            }
        )
    soft = []
    if airway_wall is not None:
        for level in SOFT_TISSUE_LEVELS:
            if level not in corners:
                continue
            got = soft_tissue_ray(corners[level], np.asarray(airway_wall, np.float64))
            if got is None:
                continue
            thickness, point = got
            if field_mm is not None and not (
                field_mm[0] <= point[0] <= field_mm[2] and field_mm[1] <= point[1] <= field_mm[3]
            ):
                continue
            corner = corners[level].array("anterior_inferior")
            soft.append(
                {
                    "level": level,
                    "thickness": round(thickness, 4),
                    "corner": [round(float(c) / spacing_mm, 3) for c in corner],
                    "airway": [round(float(c) / spacing_mm, 3) for c in point],
                }
            )
    flags = {
        "malalignment": [
            f"{s['upper']}/{s['lower']}"
            for s in steps
            if abs(shared_step(s["anterior"], s["posterior"])) > STEP_OFF_LIMIT_MM
        ],
        "soft_tissue": [
            s["level"] for s in soft if s["thickness"] > SOFT_TISSUE_LEVELS[s["level"]]
        ],
        "fracture_grade3": [label for label, v in by_label.items() if v.genant == 3],
        "listhesis_grade2": [f"{s['upper']}/{s['lower']}" for s in slips if s["grade"] >= 2],
    }
    return {
        "unit": "mm",
        "basis": (
            "true corners in the patient plane (mm), measured by pacsnode.analysis.readout; "
            "flags list the levels past each limit (empty: not flagged)"
        ),
        "cobb": cobb,
        "step_offs": steps,
        "slips": slips,
        "soft_tissue": soft,
        "flags": flags,
        "drawn": findings.as_json(),
    }
