"""VertXNet's ensemble rules (its Algorithm 1): merge the vertebra masks of the semantic
path (a UNet's blobs) and the instance path (one mask per detected vertebra).

Pure array code on film-sized boolean masks, so the rules are tested on toy masks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_LAMBDA",
    "Ensembled",
    "Origin",
    "agreement",
    "ensemble",
    "instance_coverage",
    "sort_along_spine",
]

DEFAULT_ETA = 0.6
"""Agreement threshold η; the paper recommends 0.6 (0.3–0.7 gave similar results)."""

DEFAULT_LAMBDA = 2.0
"""Width λ of the accepted area band μ ± λσ for leftovers; the paper leaves it open."""

LEFTOVER_OVERLAP = 0.2
"""A leftover with more than this share of its area on accepted vertebrae is not picked
up: vertebral bodies do not overlap, so it outlines vertebrae the ensemble already has.
Neighbouring masks accepted in agreement overlapped by at most 0.11 of their area on 40
development phantoms (seed 3000)."""

Mask = NDArray[np.bool_]


class Origin(enum.Enum):
    """Which rule put a mask in the ensemble."""

    AGREEMENT = "agreement"
    """A semantic and an instance mask that agree (δ > η): their union."""
    INSTANCE_IN_BLOB = "instance_in_blob"
    """An instance mask mostly inside a semantic blob that is not its match (δ ≤ η,
    δ_m > η): the blob is over-merged, the instance mask is kept."""
    SEMANTIC_LEFTOVER = "semantic_leftover"
    INSTANCE_LEFTOVER = "instance_leftover"
    """Unmatched masks whose area is within μ ± λσ of the masks accepted so far."""
    DENS_JOINED = "dens_joined"
    """Not one of VertXNet's rules: C2's dens outlined apart from its body and joined to
    it after the identifier (:func:`pacsnode.analysis.naming.dens_apart`)."""


@dataclass(frozen=True)
class Ensembled:
    """One vertebra mask of the ensemble and the rule that chose it."""

    mask: Mask
    origin: Origin

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def agreement(a: Mask, b: Mask) -> float:
    """δ(A, B) = |A ∩ B| / max(|A|, |B|); 0 when both are empty."""
    larger = max(int(a.sum()), int(b.sum()))
    return 0.0 if larger == 0 else int(np.logical_and(a, b).sum()) / larger


def instance_coverage(semantic: Mask, instance: Mask) -> float:
    """δ_m(U, M) = |U ∩ M| / |M|: how much of the instance mask lies inside the blob."""
    area = int(instance.sum())
    return 0.0 if area == 0 else int(np.logical_and(semantic, instance).sum()) / area


def ensemble(
    semantic: Sequence[Mask],
    instance: Sequence[Mask],
    *,
    eta: float = DEFAULT_ETA,
    lam: float = DEFAULT_LAMBDA,
    axis: tuple[float, float] = (0.0, 1.0),
) -> list[Ensembled]:
    """Merge the two paths' masks by Algorithm 1, sorted along the spine.

    Parameters
    ----------
    semantic
        The semantic path's candidate masks C^u (connected components of its output),
        each (rows, cols) on the same film.
    instance
        The instance path's masks C^m, one per detected vertebra.
    eta
        η: agreement threshold for δ and δ_m.
    lam
        λ: leftovers are kept when their area lies in the open interval μ ± λσ of the
        areas accepted by the pairwise rules (σ the population standard deviation).
    axis
        The spine direction (x, y) in film pixels, pointing from the head down; the
        result is sorted by the projection of each mask's centroid on it.

    Notes
    -----
    The pairwise pass follows the pseudo code: for each semantic mask in turn, the first
    instance mask that agrees with it is merged with it and both leave their lists; an
    instance mask mostly inside a blob it does not agree with replaces its part of that
    blob and leaves its list, while the blob stays for the leftover pass (where an
    over-merged blob's area usually falls outside the band). With fewer than two
    accepted masks σ is 0 and the band is empty, so no leftover is kept.

    The leftover pass picks up *missed* vertebrae, as the paper puts it: a leftover lying
    over a vertebra already accepted (more than :data:`LEFTOVER_OVERLAP` of it) is not
    one, and is dropped. Instance leftovers go first (each has a detected centre and
    size behind it), so where an instance mask and a blob that disagree with each other
    are both left over for the same body, the instance mask is kept.
    """
    if not 0.0 < eta < 1.0:
        raise ValueError(f"eta must be in (0, 1), got {eta}")
    if lam < 0.0:
        raise ValueError(f"lambda must be non-negative, got {lam}")
    remaining_u = [m.astype(bool, copy=False) for m in semantic if m.any()]
    remaining_m = [m.astype(bool, copy=False) for m in instance if m.any()]
    boxes_m = [_box(m) for m in remaining_m]
    accepted: list[Ensembled] = []

    i = 0
    while i < len(remaining_u):
        blob = remaining_u[i]
        box = _box(blob)
        matched = False
        j = 0
        while j < len(remaining_m):
            candidate = remaining_m[j]
            if not _touch(box, boxes_m[j]):  # δ = δ_m = 0: neither rule applies
                j += 1
                continue
            if agreement(blob, candidate) > eta:
                accepted.append(Ensembled(np.logical_or(blob, candidate), Origin.AGREEMENT))
                del remaining_m[j], boxes_m[j]
                matched = True
                break
            if instance_coverage(blob, candidate) > eta:
                accepted.append(Ensembled(candidate, Origin.INSTANCE_IN_BLOB))
                del remaining_m[j], boxes_m[j]
                continue
            j += 1
        if matched:
            del remaining_u[i]
        else:
            i += 1

    areas = [entry.area for entry in accepted]
    if len(areas) >= 1:
        mu = float(np.mean(areas))
        sigma = float(np.std(areas))
        low, high = mu - lam * sigma, mu + lam * sigma
        for masks, origin in (
            (remaining_m, Origin.INSTANCE_LEFTOVER),
            (remaining_u, Origin.SEMANTIC_LEFTOVER),
        ):
            for mask in masks:
                if low < int(mask.sum()) < high and not _covered(mask, accepted):
                    accepted.append(Ensembled(mask, origin))
    return sort_along_spine(accepted, axis)


def _covered(mask: Mask, accepted: Sequence[Ensembled]) -> bool:
    """Whether more than :data:`LEFTOVER_OVERLAP` of a leftover lies on the vertebrae
    accepted so far: it then outlines vertebrae the ensemble already has."""
    box = _box(mask)
    area = int(mask.sum())
    on = 0
    for entry in accepted:
        if _touch(box, _box(entry.mask)):
            on += int(np.logical_and(mask, entry.mask).sum())
    return on > LEFTOVER_OVERLAP * area


def _box(mask: Mask) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1) of a non-empty mask, half-open."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _touch(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def sort_along_spine(masks: Sequence[Ensembled], axis: tuple[float, float]) -> list[Ensembled]:
    """``masks`` ordered by their centroid's projection on ``axis`` (x, y), head first."""
    norm = math.hypot(*axis)
    if norm == 0.0:
        raise ValueError("the spine axis must not be the zero vector")
    ux, uy = axis[0] / norm, axis[1] / norm

    def position(entry: Ensembled) -> float:
        rows, cols = np.nonzero(entry.mask)
        return float(cols.mean()) * ux + float(rows.mean()) * uy

    return sorted(masks, key=position)
