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
    "INTACT_FRONT",
    "MIDDLE_OVER_ENDS",
    "MODERATE_MARGIN",
    "NOT_GRADED",
    "OVER_NEIGHBOURS",
    "SEVERE_MARGIN",
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

SEVERE_MARGIN = 0.0
"""How far past 40 % a severe grade (3) must be read. A severe call is only ever made on a
body already past the moderate margin, so it needs none of its own once the doubtful
shapes below are kept from grades 2 and 3: on 240 validation phantoms (seeds 3000 to
3003, randomised and classic, 2010 normal bodies, 30 films with a severe fracture) films
with a severe call were found 3/30 at the old 0.12 and 19/30 at 0, with the same two
false films either way."""

NOT_GRADED = frozenset({"C2", "S1"})
"""Named bodies Genant's method does not read, measured but not graded nor taken as a
neighbour's expected height: C2, whose dens rises from its body (its corner heights run
to the dens tip), and S1, the sacrum's first segment, with no disc below it."""

INTACT_FRONT = 0.8
"""A body whose lowest height is its posterior one while its anterior height keeps this
share of the expected height is not called moderate or severe: a posterior wall lower
than an intact front is a mask that lost its posterior corner under the pedicles, the
ribs or the shoulders, not an osteoporotic deformity (a crush lowers the whole body)."""

MIDDLE_OVER_ENDS = 1.15
"""Endplates are flat or cupped, so a middle height this far above both corner heights
means a corner was misplaced: such a body is not called moderate or severe."""

OVER_NEIGHBOURS = 1.3
"""A body whose tallest height is this far above its neighbours' (median) has a mask grown
past the body (into a disc, a pedicle, soft tissue); its own height would set its
expected height too high, so it is not called moderate or severe. On the validation
films above, these three checks took false moderate or severe calls on normal bodies
from 12 of 2155 (C2 and S1 included) to 0 of 2010 and took no true moderate or severe
call away (26 of 75 with and without them). Not grading C2 and S1 took 2 of the 28 such
calls made before: bodies near them, read past the margin only against C2's dens or S1."""

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


def called_grade(
    height_loss: float, margin: float = MODERATE_MARGIN, severe_margin: float = SEVERE_MARGIN
) -> int:
    """Genant's grade of the measured loss, with a moderate grade only past 25 % by
    ``margin`` (a moderate reading just past 25 % is called mild) and a severe one past 40 %
    by ``severe_margin`` and never short of the moderate call's own bound."""
    grade = genant_grade(height_loss)
    if grade == 3 and height_loss < _BOUNDS[3] + severe_margin:
        grade = 2
    if grade >= 2 and height_loss < _BOUNDS[2] + margin:
        grade = 1
    return grade


def _doubtful(body: BodyHeights, expected: float, over_neighbours: bool) -> bool:
    """Whether the body's heights are a misplaced corner or a grown mask rather than a
    deformity (:data:`INTACT_FRONT`, :data:`MIDDLE_OVER_ENDS`, :data:`OVER_NEIGHBOURS`)."""
    lowest = min(body.anterior, body.middle, body.posterior)
    back_alone = body.posterior == lowest and body.anterior >= INTACT_FRONT * expected
    middle_high = body.middle > MIDDLE_OVER_ENDS * max(body.anterior, body.posterior)
    return back_alone or middle_high or over_neighbours


def read_findings(
    bodies: Sequence[BodyHeights], labels: Sequence[str | None] | None = None
) -> list[Finding | None]:
    """Findings for a chain of bodies sorted head first (one per body; None for a body
    named in :data:`NOT_GRADED`).

    Parameters
    ----------
    bodies
        The chain's measured bodies, head first.
    labels
        Each body's name where the chain was named, else None; without it every body is
        graded.

    Notes
    -----
    The expected height of each body is the larger of its own tallest height and the
    median tallest height of up to two graded neighbours on each side (fewer at the ends
    of the chain). Adjacent bodies differ by a few percent, well below the 20 % of a grade
    1 deformity. A body whose heights are all within 20 % of each other but which is low
    against its neighbours is read as a crush (flattened as a whole). A body whose shape
    is doubtful (:func:`_doubtful`) is called at most mild.
    """
    names = list(labels) if labels is not None else [None] * len(bodies)
    if len(names) != len(bodies):
        raise ValueError("give one label per body")
    graded = [name not in NOT_GRADED for name in names]
    tallest = [b.tallest for b in bodies]
    findings: list[Finding | None] = []
    for i, body in enumerate(bodies):
        if not graded[i]:
            findings.append(None)
            continue
        near = [k for k in range(max(0, i - 2), i + 3) if k != i and k < len(bodies)]
        neighbours = [tallest[k] for k in near if graded[k]]
        usual = statistics.median(neighbours) if neighbours else tallest[i]
        reference = max(tallest[i], usual)
        heights = {
            Deformity.WEDGE: body.anterior,
            Deformity.BICONCAVE: body.middle,
            Deformity.CRUSH: body.posterior,
        }
        lowest = min(heights.values())
        loss = 0.0 if reference <= 0 else min(1.0, max(0.0, 1.0 - lowest / reference))
        grade = called_grade(loss)
        if grade >= 2 and _doubtful(body, reference, tallest[i] > OVER_NEIGHBOURS * usual):
            grade = 1
        if grade == 0:
            shape = Deformity.NONE
        elif lowest >= 0.8 * max(heights.values()):
            shape = Deformity.CRUSH  # flattened as a whole against its neighbours
        else:
            shape = min(heights, key=lambda kind: heights[kind])
        findings.append(Finding(loss, grade, shape, reference, grade_confidence(loss, grade)))
    return findings
