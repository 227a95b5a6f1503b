"""What clinicians read from vertebral body heights: Genant's semi-quantitative grade of a
vertebral deformity, and its shape (wedge, biconcave, crush).

Genant grades the height reduction of a body: under 20 % normal (0), 20-25 % mild (1),
25-40 % moderate (2), over 40 % severe (3). The reduction is measured against the height
the body should have. This module takes that from the body's own tallest height and from
its neighbours, whichever is larger, so a body squashed evenly still shows against the
bodies above and below it.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pacsnode.analysis.measure import BodyHeights

__all__ = [
    "HEIGHT_LOSS_SD",
    "MODERATE_MARGIN",
    "Deformity",
    "Finding",
    "called_grade",
    "genant_grade",
    "grade_confidence",
    "read_findings",
]

HEIGHT_LOSS_SD = 0.08
"""Standard deviation of the measured height loss against the true one (a fraction): 0.080
on 386 vertebrae of 40 validation phantoms of the training appearance families (seed
3000), measured by ``benchmarks/height_loss_error.py``; never on the test seed or a
held-out family."""

MODERATE_MARGIN = 0.12
"""A moderate or severe grade (2 or 3) is called only when the measured height loss is
this far past its lower bound (25 %, 40 %). Below that the grade one lower is called
(grade 1 still reports a compression fracture), so a measurement error on a normal body
does not become a moderate fracture on an ER overlay. On the same validation films,
normal bodies measured past 25 % + margin: 7.4 % with no margin, 1.6 % at 0.09, 0.8 % at
0.12, the smallest margin under 1 %."""

_BOUNDS = (0.0, 0.20, 0.25, 0.40, 1.0)


def genant_grade(height_loss: float) -> int:
    """Genant's grade (0-3) of a fractional height reduction (0.22 for 22 %)."""
    if not 0.0 <= height_loss <= 1.0:
        raise ValueError(f"a height reduction is a fraction in [0, 1], got {height_loss}")
    if height_loss < 0.20:
        return 0
    if height_loss < 0.25:
        return 1
    if height_loss <= 0.40:
        return 2
    return 3


class Deformity(enum.Enum):
    """Which part of the body lost most height."""

    NONE = "none"
    WEDGE = "wedge"
    """The anterior height is the lowest."""
    BICONCAVE = "biconcave"
    """The middle height is the lowest: both endplates bowed in."""
    CRUSH = "crush"
    """The posterior height is the lowest (or the whole body is flattened)."""


@dataclass(frozen=True)
class Finding:
    """The reading of one vertebral body.

    Attributes
    ----------
    height_loss
        Fractional reduction of the lowest height against the expected height.
    grade
        Genant grade 0-3.
    deformity
        Its shape; NONE for grade 0.
    expected_height
        The reference height, in the units of the heights given.
    """

    height_loss: float
    grade: int
    deformity: Deformity
    expected_height: float
    confidence: float = 1.0
    """Probability that the true grade is ``grade``, given the measured height loss and
    its measurement error (:func:`grade_confidence`)."""


def grade_confidence(height_loss: float, grade: int, sd: float = HEIGHT_LOSS_SD) -> float:
    """Probability that the true height loss lies in ``grade``'s band when the measured
    one is ``height_loss`` with a normal error of ``sd``."""
    lo, hi = _BOUNDS[grade], _BOUNDS[grade + 1]

    def cdf(x: float) -> float:
        return 0.5 * (1.0 + math.erf((x - height_loss) / (sd * math.sqrt(2.0))))

    low = 0.0 if grade == 0 else cdf(lo)
    high = 1.0 if grade == 3 else cdf(hi)
    return max(0.0, min(1.0, high - low))


def called_grade(height_loss: float, margin: float = MODERATE_MARGIN) -> int:
    """Genant's grade of the measured loss, with a moderate or severe grade only past its
    bound by ``margin``: a severe reading just past 40 % is called moderate, a moderate
    one just past 25 % mild."""
    grade = genant_grade(height_loss)
    if grade >= 2 and height_loss < _BOUNDS[grade] + margin:
        grade -= 1
    return grade


def read_findings(bodies: Sequence[BodyHeights]) -> list[Finding]:
    """Findings for a chain of bodies sorted head first (one per body).

    The expected height of each body is the larger of its own tallest height and the
    median tallest height of up to two neighbours on each side (fewer at the ends of the
    chain). Adjacent bodies differ by a few percent, well below the 20 % of a grade 1
    deformity. A body whose heights are all within 20 % of each other but which is low
    against its neighbours is read as a crush (flattened as a whole).
    """
    tallest = [b.tallest for b in bodies]
    findings = []
    for i, body in enumerate(bodies):
        neighbours = tallest[max(0, i - 2) : i] + tallest[i + 1 : i + 3]
        reference = max(tallest[i], statistics.median(neighbours)) if neighbours else tallest[i]
        heights = {
            Deformity.WEDGE: body.anterior,
            Deformity.BICONCAVE: body.middle,
            Deformity.CRUSH: body.posterior,
        }
        lowest = min(heights.values())
        loss = 0.0 if reference <= 0 else min(1.0, max(0.0, 1.0 - lowest / reference))
        grade = called_grade(loss)
        if grade == 0:
            shape = Deformity.NONE
        elif lowest >= 0.8 * max(heights.values()):
            shape = Deformity.CRUSH  # flattened as a whole against its neighbours
        else:
            shape = min(heights, key=lambda kind: heights[kind])
        findings.append(Finding(loss, grade, shape, reference, grade_confidence(loss, grade)))
    return findings
