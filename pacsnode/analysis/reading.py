"""What the full stack makes of one film: its vertebrae, segmented, sorted head first,
named, measured and graded. The export builders turn a :class:`SpineReading` into the
SEG and SR; the stack (:mod:`pacsnode.analysis.stack`) makes it.

Film coordinates are (x, y) pixels with (0, 0) the top-left corner of the top-left pixel,
as in the SR's SCOORD; masks are (rows, cols) on the film's own pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.findings import Finding
from pacsnode.analysis.measure import BodyHeights
from pacsnode.analysis.readout import ReadOut

__all__ = ["SpineReading", "Vertebra"]


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body found on the film.

    Attributes
    ----------
    label
        Its name, "C5", "L3", "S1"…, or its position from the top ("V1", "V2"…) when it
        could not be identified.
    confidence
        Probability in [0, 1] that ``label`` is right; 0 for a positional label.
    identified
        ``label`` is an anatomical name.
    mask
        (rows, cols) film pixels of the body.
    outline
        (M, 2) closed polygon (x, y) around the body, first point not repeated.
    centroid
        (x, y) of the mask.
    heights
        Corners and anterior, middle, posterior heights in film pixels, or None when the
        mask was too small or irregular to measure.
    finding
        Genant grade and deformity shape read from the heights, or None without heights.
    origin
        Which ensemble rule kept the mask ("agreement", "instance_in_blob"…).
    """

    label: str
    confidence: float
    identified: bool
    mask: NDArray[np.bool_]
    outline: NDArray[np.float64]
    centroid: tuple[float, float]
    heights: BodyHeights | None
    finding: Finding | None
    origin: str

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class SpineReading:
    """The vertebrae of one film, head first.

    Attributes
    ----------
    vertebrae
        Sorted along the spine from the head down.
    reference
        "C2" or "S1" when a reference vertebra was recognised and the chain named from
        it; None when the names are positions only (identification was not possible).
    models
        Model name -> version of every network that contributed, for the results'
        algorithm identification.
    abstention
        Why the stack gave positions rather than names although it had a reference: the
        named chain did not hold together (``reference`` None), or the vertebrae past a
        body too many were left unnamed (``reference`` set); None otherwise.
    readout
        The ER read-out (alignment, slips, soft tissue, critical findings) measured from
        the vertebrae; None when it was not made.
    """

    vertebrae: tuple[Vertebra, ...]
    reference: str | None
    models: dict[str, str]
    abstention: str | None = None
    readout: ReadOut | None = None

    @property
    def identified(self) -> bool:
        return self.reference is not None
