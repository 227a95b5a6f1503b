"""Naming vertebrae by walking the sorted chain from a reference vertebra (VertXNet §2.4):
down from C2 (C3…C7, T1, T2…), up from S1 (L5…L1, T12, T11…).

Which vertebra is the reference is the identifier network's call; this module walks, and
steps over the gaps where the chain has lost a vertebra (:func:`skipped_vertebrae`): a
body the detector missed between L1 and L3 leaves the L1 above it named L1, not L2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "FRAGMENT",
    "GAP_RATIO",
    "REFERENCES",
    "SPINE_ORDER",
    "Named",
    "chain_labels",
    "name_chain",
    "skipped_vertebrae",
]

SPINE_ORDER: Final = (
    *(f"C{n}" for n in range(1, 8)),
    *(f"T{n}" for n in range(1, 13)),
    *(f"L{n}" for n in range(1, 6)),
    "S1",
)
"""Vertebrae from the head down, as a lateral film shows them."""

REFERENCES: Final = ("C2", "S1")
"""The vertebrae the identifier recognises: the dens of C2, the sacral wedge of S1."""


GAP_RATIO: Final = 1.4
"""A gap between neighbours of the chain this many times the chain's usual one (each gap
over the neighbours' mean body size) has lost a vertebra. On the annotated outlines of 200
training phantoms the usual gaps reach 1.20 and a gap with a vertebra taken out starts at
1.54 (1.59 at the 0.1th percentile): body size is measured as the square root of the
area, which a C2 with its dens does not inflate as its height would."""


FRAGMENT: Final = 0.6
"""A body smaller than this share of the median size of the five around it is taken for a
fragment of a mask (a partial segmentation), whose centre says little about where its
vertebra lies: no gap is judged beside it. Annotated bodies of 200 training phantoms,
crushed ones included, are at least 0.71 of it."""


def skipped_vertebrae(
    centres: ArrayLike, sizes: ArrayLike, reference: int | None = None
) -> list[int]:
    """How many vertebrae the chain seems to have lost between each pair of neighbours.

    Parameters
    ----------
    centres
        (N, 2) body centres, the chain sorted head first.
    sizes
        (N,) body sizes (the square root of the area), in the centres' units.
    reference
        Index of the reference vertebra, if any: no gap beside it is judged. C2's dens
        and S1's wedge put its centre off a body's (on training outlines a lost C3 gave
        gap ratios from 1.24, any other lost vertebra from 1.54), and a false step there
        renames the whole chain.

    Returns
    -------
    N - 1 counts: 0 for a usual gap; for a gap ``r`` times the median gap (each gap over
    its neighbours' mean size), ``round(r) - 1`` (at least 1) when ``r >`` :data:`GAP_RATIO`
    and neither neighbour is a :data:`FRAGMENT` or the reference.
    Chains of fewer than four bodies have too few gaps to tell the usual one: all 0.
    """
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    size = np.asarray(sizes, np.float64).reshape(-1)
    if len(c) != len(size):
        raise ValueError(f"{len(c)} centres but {len(size)} sizes")
    if len(c) < 4:
        return [0] * max(len(c) - 1, 0)
    if not (size > 0).all():
        raise ValueError("body sizes must be positive")
    gaps = np.linalg.norm(np.diff(c, axis=0), axis=1) / ((size[:-1] + size[1:]) / 2)
    usual = float(np.median(gaps))
    if usual <= 0:
        return [0] * (len(c) - 1)
    n = len(size)
    local = np.array([np.median(size[max(i - 2, 0) : i + 3]) for i in range(n)])
    judged = size >= FRAGMENT * local  # the bodies beside which gaps are judged
    if reference is not None:
        judged[reference] = False
    return [
        max(int(np.floor(r + 0.5)) - 1, 1) if r > GAP_RATIO and judged[i] and judged[i + 1] else 0
        for i, r in enumerate(gaps / usual)
    ]


@dataclass(frozen=True)
class Named:
    """The name given to one vertebra of the sorted chain.

    Attributes
    ----------
    label
        ``"C5"``, ``"L3"``…; by position only (``"V1"``, ``"V2"``… from the top) when no
        reference was found or the walk ran past the ends of the spine.
    confidence
        Probability that the label is right: the identifier's confidence in the
        reference (the walk itself adds no guess); 0 for positional labels.
    identified
        The label is an anatomical name, not a position.
    """

    label: str
    confidence: float
    identified: bool


def name_chain(
    count: int,
    reference: tuple[int, str, float] | None,
    skipped: Sequence[int] | None = None,
) -> list[Named]:
    """Names for ``count`` vertebrae sorted head first.

    Parameters
    ----------
    count
        How many vertebrae the chain has.
    reference
        ``(index in the chain, "C2" or "S1", confidence)``, or None when the identifier
        found no reference vertebra (many lateral chest films).
    skipped
        Per gap between neighbours (``count - 1``), how many vertebrae the chain lost
        there (:func:`skipped_vertebrae`); the walk steps over them. Default: none.

    Raises
    ------
    ValueError
        An index outside the chain, a reference other than C2 or S1, or a confidence
        outside [0, 1].
    """
    if count < 0:
        raise ValueError(f"a chain has a non-negative length, got {count}")
    if reference is None:
        return [Named(f"V{i + 1}", 0.0, identified=False) for i in range(count)]
    index, name, confidence = reference
    if name not in REFERENCES:
        raise ValueError(f"the reference is C2 or S1, got {name!r}")
    if not 0 <= index < count:
        raise ValueError(f"reference index {index} outside a chain of {count}")
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {confidence}")
    steps = [1] * max(count - 1, 0)
    if skipped is not None:
        if len(skipped) != len(steps) or any(k < 0 for k in skipped):
            raise ValueError(f"skipped needs {len(steps)} non-negative counts, got {skipped}")
        steps = [1 + int(k) for k in skipped]
    anchor = SPINE_ORDER.index(name)
    offsets = np.concatenate([[0], np.cumsum(steps)]).astype(int) if count else []
    named = []
    for i in range(count):
        position = anchor + int(offsets[i] - offsets[index])
        if 0 <= position < len(SPINE_ORDER):
            named.append(Named(SPINE_ORDER[position], confidence, identified=True))
        else:  # more vertebrae than the spine has past the reference: not nameable
            named.append(Named(f"V{i + 1}", 0.0, identified=False))
    return named


def chain_labels(named: Sequence[Named]) -> list[str]:
    """The labels alone, for reports and tests."""
    return [entry.label for entry in named]
