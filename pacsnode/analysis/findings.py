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
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from pacsnode.analysis.measure import BodyHeights

__all__ = ["Deformity", "Finding", "genant_grade", "read_findings"]


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


def read_findings(bodies: Sequence[BodyHeights]) -> list[Finding]:
    """Findings for a chain of bodies sorted head first (one per body).

    The expected height of each body is the larger of its own tallest height and the
    median tallest height of up to two neighbours on each side (fewer at the ends of the
    chain). Adjacent bodies differ by a few percent, well below the 20 % of a grade 1
    deformity. A body whose heights are all within 20 % of each other but which is low
    against its neighbours is read as a crush (flattened as a whole).
    """
    tallest = [max(b.anterior, b.middle, b.posterior) for b in bodies]
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
        grade = genant_grade(loss)
        if grade == 0:
            shape = Deformity.NONE
        elif lowest >= 0.8 * max(heights.values()):
            shape = Deformity.CRUSH  # flattened as a whole against its neighbours
        else:
            shape = min(heights, key=lambda kind: heights[kind])
        findings.append(Finding(loss, grade, shape, reference))
    return findings
