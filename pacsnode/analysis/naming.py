"""Naming vertebrae by walking the sorted chain from a reference vertebra (VertXNet §2.4):
down from C2 (C3…C7, T1, T2…), up from S1 (L5…L1, T12, T11…).

Which vertebra is the reference is the identifier network's call; this module walks, and
steps over the gaps where the chain has lost a vertebra (:func:`skipped_vertebrae`): a
body the detector missed between L1 and L3 leaves the L1 above it named L1, not L2.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import distance_transform_edt

__all__ = [
    "AMBIGUITY",
    "C2_CLEARANCE",
    "C2_GAP",
    "CLEAR_LOSS",
    "CROWDED",
    "DENS_RATIO",
    "FRAGMENT",
    "GAP_RATIO",
    "OFF_AXIS",
    "REFERENCES",
    "SPINE_ORDER",
    "Named",
    "NamingInputs",
    "chain_labels",
    "clearances",
    "crowded_gaps",
    "dens_apart",
    "name_chain",
    "naming_doubt",
    "off_axis",
    "pick_reference",
    "references_for",
    "skipped_vertebrae",
    "stop_at_anomalies",
    "unclear_gaps",
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
    size = np.asarray(sizes, np.float64).reshape(-1)
    ratios = _gap_ratios(centres, size)
    if ratios is None:
        return [0] * max(len(size) - 1, 0)
    judged = _judged(size, reference)
    return [
        max(int(np.floor(r + 0.5)) - 1, 1) if r > GAP_RATIO and judged[i] and judged[i + 1] else 0
        for i, r in enumerate(ratios)
    ]


def _judged(size: NDArray[np.float64], reference: int | None) -> NDArray[np.bool_]:
    """The bodies beside which gaps are judged: neither a :data:`FRAGMENT` nor the reference."""
    n = len(size)
    local = np.array([np.median(size[max(i - 2, 0) : i + 3]) for i in range(n)])
    judged = size >= FRAGMENT * local
    if reference is not None:
        judged[reference] = False
    return judged


CLEAR_LOSS: Final = 1.8
"""A gap over :data:`GAP_RATIO` but under this many times the chain's usual one cannot be
told apart: one vertebra lost doubles a gap (a ratio near 2), none leaves it near 1. The
walk steps over such a gap as one lost vertebra, but the names past it are left unnamed
(:func:`unclear_gaps`). On validation films (seeds 3000 to 3003, randomised and classic)
the gaps the stack's chains had lost a vertebra in were 2.0 and over; a partial mask of L4,
its centre off the body's, made a gap of 1.68 that named four vertebrae one too high."""


def unclear_gaps(centres: ArrayLike, sizes: ArrayLike, reference: int | None = None) -> list[bool]:
    """Per gap between neighbours of a chain sorted head first (N - 1), whether it may or
    may not have lost a vertebra: over :data:`GAP_RATIO` times the chain's usual gap and
    under :data:`CLEAR_LOSS`, or over :data:`GAP_RATIO` beside a fragment or the reference
    (where :func:`skipped_vertebrae` judges no gap). All False below four bodies."""
    size = np.asarray(sizes, np.float64).reshape(-1)
    ratios = _gap_ratios(centres, size)
    if ratios is None:
        return [False] * max(len(size) - 1, 0)
    judged = _judged(size, reference)
    return [
        bool(r > GAP_RATIO and (r < CLEAR_LOSS or not (judged[i] and judged[i + 1])))
        for i, r in enumerate(ratios)
    ]


def _gap_ratios(centres: ArrayLike, sizes: ArrayLike) -> NDArray[np.float64] | None:
    """Each gap between neighbours over its neighbours' mean size, over the median of
    those: 1 for a usual gap. None for a chain of fewer than four bodies (too few gaps to
    tell the usual one) or one whose centres coincide."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    size = np.asarray(sizes, np.float64).reshape(-1)
    if len(c) != len(size):
        raise ValueError(f"{len(c)} centres but {len(size)} sizes")
    if len(c) < 4:
        return None
    if not (size > 0).all():
        raise ValueError("body sizes must be positive")
    gaps = np.linalg.norm(np.diff(c, axis=0), axis=1) / ((size[:-1] + size[1:]) / 2)
    usual = float(np.median(gaps))
    if usual <= 0:
        return None
    return gaps / usual


CROWDED: Final = 0.65
"""A gap between neighbours under this share of the chain's usual one (as
:func:`skipped_vertebrae` measures gaps) holds a body too many: a false detection or a
mask split in two, which shifts every name past it by one. On the annotated outlines of
120 training phantoms (seed 1000) usual gaps are at least 0.81 of the median (0.84 at the
1st percentile); a body too many halves the gaps beside it."""


def crowded_gaps(centres: ArrayLike, sizes: ArrayLike) -> list[bool]:
    """Per gap between neighbours of a chain sorted head first (N - 1), whether it is
    under :data:`CROWDED` times the chain's usual gap. All False below four bodies."""
    ratios = _gap_ratios(centres, sizes)
    if ratios is None:
        return [False] * max(len(np.asarray(sizes).reshape(-1)) - 1, 0)
    return [bool(r < CROWDED) for r in ratios]


def clearances(masks: Sequence[NDArray[np.bool_]]) -> list[float]:
    """Per pair of neighbours of a chain sorted head first (N - 1), the shortest distance
    between their masks in pixels (0 where they touch or overlap): the disc space, seen
    from the masks. All masks share one frame (the same shape)."""
    for upper, lower in pairwise(masks):
        if upper.shape != lower.shape:
            raise ValueError(f"masks of shapes {upper.shape} and {lower.shape}")
    boxes = [_box(mask) for mask in masks]
    out = []
    for (upper, a), (lower, b) in pairwise(zip(masks, boxes, strict=True)):
        r0, c0 = min(a[0], b[0]), min(a[1], b[1])
        r1, c1 = max(a[2], b[2]), max(a[3], b[3])
        above, below = upper[r0:r1, c0:c1], lower[r0:r1, c0:c1]
        if (above & below).any():
            out.append(0.0)
            continue
        # Distance from each pixel to the lower mask; the nearest upper pixel's, less the
        # pixel both edges share, is the gap between them.
        to_lower = distance_transform_edt(~below)
        out.append(max(float(to_lower[above].min()) - 1.0, 0.0))
    return out


def _box(mask: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    """(first row, first column, last row + 1, last column + 1) of a mask's pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("an empty mask has no distance to its neighbour")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


OFF_AXIS: Final = 0.5
"""A body whose centre lies further than this share of its size from the column of the
bodies around it (:func:`off_axis`) is not one of them: a structure beside the spine
(trachea, clavicle, a bowel loop, an implant) taken for a vertebra, sorted in between
two. On the annotated outlines of 120 training phantoms (seed 1000) bodies lie at most
0.25 of their size off the line through their two neighbours (0.18 at the 99th
percentile); the nearest of the lines :func:`off_axis` draws is nearer still."""


def off_axis(centres: ArrayLike, sizes: ArrayLike) -> list[bool]:
    """Per body of a chain sorted head first, whether it lies off the column
    (:data:`OFF_AXIS`) of the bodies around it: its distance to each line through one of
    the two bodies above and one of the two below, the nearest of those lines counting,
    so that a false body beside the column does not push its true neighbours off it too.
    The two end bodies, with one side only, are not judged."""
    c = np.asarray(centres, np.float64).reshape(-1, 2)
    size = np.asarray(sizes, np.float64).reshape(-1)
    if len(c) != len(size):
        raise ValueError(f"{len(c)} centres but {len(size)} sizes")
    flags = [False] * len(c)
    for i in range(1, len(c) - 1):
        if size[i] <= 0:
            continue
        distances = []
        for j in range(max(i - 2, 0), i):
            for k in range(i + 1, min(i + 3, len(c))):
                d = c[k] - c[j]
                length = float(np.hypot(*d))
                if length > 0:
                    v = c[i] - c[j]
                    distances.append(abs(float(d[0] * v[1] - d[1] * v[0])) / length)
        flags[i] = bool(distances) and min(distances) > OFF_AXIS * size[i]
    return flags


def stop_at_anomalies(
    named: Sequence[Named],
    reference: int,
    crowded: Sequence[bool],
    off: Sequence[bool] | None = None,
) -> tuple[list[Named], int]:
    """The names walked from the reference up to the first anomaly on each side: a
    crowded gap (:func:`crowded_gaps`) or a body off the column (:func:`off_axis`).
    Past it the vertebrae get positions (``V<n>``): a body too many there would shift
    each name by one, and which body is too many cannot be told.

    Returns the names and how many vertebrae were left unnamed."""
    n = len(named)
    if len(crowded) != max(n - 1, 0):
        raise ValueError(f"{n} names need {n - 1} gaps, got {len(crowded)}")
    off = [False] * n if off is None else list(off)
    if len(off) != n:
        raise ValueError(f"{n} names need {n} off-axis flags, got {len(off)}")
    if not 0 <= reference < n:
        raise ValueError(f"reference index {reference} outside a chain of {n}")
    # First unnamed index walking down, and last unnamed index walking up.
    down = next((i for i in range(reference + 1, n) if off[i] or crowded[i - 1]), n)
    up = next((i for i in range(reference - 1, -1, -1) if off[i] or crowded[i]), -1)
    out = [
        Named(f"V{i + 1}", 0.0, identified=False) if i >= down or i <= up else entry
        for i, entry in enumerate(named)
    ]
    return out, (n - down) + (up + 1)


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


# --------------------------------------------------------------------------------------------
# Safe naming: what the header allows, and a named chain checked before its names are given


_CERVICAL = ("CSPINE", "C-SPINE", "C SPINE", "CERVICAL", "NECK", "HWS", "DENS", "ODONTOID")
_LUMBAR = (
    "LSPINE", "L-SPINE", "L SPINE", "LUMBAR", "LUMBOSACRAL", "SSPINE", "SACRUM", "SACRAL",
    "LWS", "COCCYX",
)  # fmt: skip
_THORACIC = ("TSPINE", "T-SPINE", "T SPINE", "THORACIC", "CHEST", "THORAX", "BWS", "RIBS")
_WHOLE = ("WHOLESPINE", "WHOLE SPINE", "FULL SPINE", "SCOLIOSIS")


def references_for(texts: Sequence[str | None]) -> frozenset[str]:
    """The reference vertebrae a film may be named from, by what its header says.

    Parameters
    ----------
    texts
        Body Part Examined first, then Study Description, Series Description and Protocol
        Name (any may be None). The first text that names a region decides: a cervical
        film is named only from C2, a lumbar or sacral one only from S1, a thoracic or
        chest film from neither (it shows neither end of the spine); a whole-spine film,
        or a header that names no region, from either.
    """
    for text in texts:
        if not text:
            continue
        t = " " + re.sub(r"[^A-Z0-9-]+", " ", str(text).upper()) + " "

        def says(words: tuple[str, ...], t: str = t) -> bool:
            # Whole words only: "CERVICAL SPINE" must not read as "L SPINE".
            return any(f" {w} " in t for w in words)

        found: set[str] = set()
        if says(_WHOLE):
            return frozenset(REFERENCES)
        if says(_CERVICAL):
            found.add("C2")
        if says(_LUMBAR):
            found.add("S1")
        thoracic = says(_THORACIC)
        if found or thoracic:
            return frozenset(found)
    return frozenset(REFERENCES)


CERVICAL_MAX_MM: Final = 20.0
"""Largest median body size (square root of the area, mm) of a chain named from C2.
Adult cervical bodies are some 15 x 15 mm on a lateral film, thoracic ones 20-25 mm,
lumbar ones 30 x 35 mm: a chain this large is not a neck. On the outlines of 60 training
phantoms (seed 1000) cervical chains reached 15.3 mm in the patient plane (19.1 mm in the
detector plane, at the largest magnification) and chest chains started at 18.1 mm."""

LUMBAR_MIN_MM: Final = 24.0
"""Smallest median body size (mm) of a chain named from S1: on the same training
outlines lumbar chains started at 25.9 mm and chest chains reached 22.5 mm (patient
plane), so a thoracic chain taken for a lumbar one is caught where the spacing is in the
patient plane."""

DENS_RATIO: Final = 1.15
"""The body taken for C2 carries the dens: its size (square root of the area) is at least
this many times the median of the next two bodies'. On the outlines of 80 training
phantoms (seed 1000) C2 against C3 ran from 1.20 to 1.41 and C3 against C4 from 0.87 to
1.14: a "C2" no larger than the bodies below it is a C3 whose C2 was missed."""


C2_GAP: Final = 0.8
"""The gap from the body taken for C2 to the next one, over the chain's usual gap (as
:func:`skipped_vertebrae` measures gaps), is at least this: the dens lifts C2's centre.
On the annotated outlines of 200 training phantoms (seed 1000; 67 with C2 and C3) that
gap ran from 0.98 to 1.19 (median 1.13); on the chains the stack found on the validation
films of seed 3000 (randomised and classic families), from a true C2, it was at least 1.0.
A shorter gap is C2 split in two: the dens with C1's arch outlined as a body of its own
above C2's body, taken for C2, so that every name below is one level off."""


C2_CLEARANCE: Final = 0.3
"""The disc space between the body taken for C2 and the next one, as the shortest
distance between their masks (:func:`clearances`) over the chain's median, is at least
this. C1's ring with the dens, outlined as a body of its own above C2's body (as the stack
does on films of the 3-D renderer), sits on C2's body: a "C2" that near the body below it
is that outline, and every name below it would be one level off.

- Training outlines (seed 1000, ``benchmarks/c2_clearance.py``): the C2-C3 ratio ran
  from 0.34 on 120 cervical films of the 2-D renderer and from 0.21 on 40 of the 3-D
  renderer (its projected outlines overlap more; such a C2 is left unnamed, not misnamed).
- The stack's masks on validation films (seed 3000, 32 cervical films of the training
  families): a true C2 from 0.48.
- The stack's masks on 3-D renderer films (seed 3002): C1's outline taken for C2 on 5 of
  11 cervical films, at 0.00, 0.00, 0.00, 0.14 and 0.25.

Not used for S1: on the training outlines L5 and S1 touch on some lumbar films."""


def naming_doubt(
    named: Sequence[Named],
    reference: tuple[int, str, float] | None,
    sizes_mm: Sequence[float] | None = None,
    sizes: Sequence[float] | None = None,
    centres: Sequence[tuple[float, float]] | None = None,
    clearance: Sequence[float] | None = None,
) -> str | None:
    """Why a named chain should not be trusted, or None when it holds together.

    Checked: the reference is at its end of the chain (nothing above C2, which leaves no
    body for a "C1"; nothing below S1); the walk did not run past the end of the spine;
    C2 is larger than the bodies below it, as its dens makes it (:data:`DENS_RATIO`),
    no nearer the next body than its dens allows (:data:`C2_GAP`), and a disc space apart
    from it (:data:`C2_CLEARANCE`);
    and, when the film has a pixel spacing, the bodies have the size of the region the
    reference belongs to (:data:`CERVICAL_MAX_MM`, :data:`LUMBAR_MIN_MM`).

    Parameters
    ----------
    named
        The chain's names, head first (:func:`name_chain`).
    reference
        ``(index, name, confidence)`` it was named from, or None.
    sizes_mm
        Each body's size (square root of its area) in mm, head first; None without spacing.
    sizes
        The same in any unit (pixels), for the size of C2 against the bodies below it
        (:data:`DENS_RATIO`); None leaves that unchecked.
    centres
        Each body's centre (x, y) in the units of ``sizes``, head first, for the gap
        below C2 (:data:`C2_GAP`); None leaves that unchecked.
    clearance
        Per pair of neighbours, the shortest distance between their masks
        (:func:`clearances`), for the disc below C2 (:data:`C2_CLEARANCE`); None leaves
        that unchecked.
    """
    if reference is None:
        return None
    index, name, _ = reference
    if name == "C2" and index != 0:
        return f"{index} bodies above the vertebra taken for C2"
    if name == "S1" and index != len(named) - 1:
        return f"{len(named) - 1 - index} bodies below the vertebra taken for S1"
    if any(not n.identified for n in named):
        return "the chain runs past the end of the spine from the reference"
    size = None if name != "C2" or sizes is None else _size_over_below(sizes, index)
    if size is not None and size < DENS_RATIO:
        return (
            f"the vertebra taken for C2 is {size:.2f} times the size "
            "of the bodies below it: no dens"
        )
    if name == "C2" and sizes is not None and centres is not None:
        ratios = _gap_ratios(centres, sizes)
        if ratios is not None and index < len(ratios) and ratios[index] < C2_GAP:
            return (
                f"the gap below the vertebra taken for C2 is {ratios[index]:.2f} of the "
                "chain's usual one: C2 split in two"
            )
    disc = None if name != "C2" or clearance is None else _disc_over_usual(clearance, index)
    if disc is not None and disc < C2_CLEARANCE:
        return (
            f"the vertebra taken for C2 is {disc:.2f} of the chain's "
            "usual disc space from the body below it: C1 and the dens, outlined above C2"
        )
    if sizes_mm is not None and len(sizes_mm) > 0:
        median = float(np.median(np.asarray(sizes_mm, np.float64)))
        if name == "C2" and median > CERVICAL_MAX_MM:
            return f"bodies of {median:.0f} mm are too large for a cervical spine"
        if name == "S1" and median < LUMBAR_MIN_MM:
            return f"bodies of {median:.0f} mm are too small for a lumbar spine"
    return None


def pick_reference(
    prob: NDArray[np.floating],
    allowed: frozenset[str] = frozenset(REFERENCES),
    threshold: float = 0.5,
    classes: Sequence[str] = ("other", *REFERENCES),
) -> tuple[int, str, float] | None:
    """The reference vertebra of a chain sorted head first: (index, name, probability),
    or None when no vertebra is an ``allowed`` reference with probability at least
    ``threshold``.

    As VertXNet reads them, C2 is the top of a cervical film and S1 the bottom of a
    lumbar one: the topmost C2 candidate and the lowest S1 candidate are taken (a lordotic
    L5 can look like S1 too, a C3 like C2), and of the two the more probable.

    Parameters
    ----------
    prob
        (N, len(classes)) probabilities of each vertebra's class.
    """
    reference, _ = _reference_or_doubt(prob, allowed, threshold, classes)
    return reference


AMBIGUITY: Final = 0.1
"""A chain has one C2 and one S1: when another vertebra looks as much like the reference
(its probability within this of the reference's, over the threshold or not), the stack
cannot tell which one it is and names neither. On validation films (seed 3000) the one chain
named from a false "S1" below the true one had them at 0.99 and 0.98."""


def _reference_or_doubt(
    prob: NDArray[np.floating],
    allowed: frozenset[str],
    threshold: float,
    classes: Sequence[str],
    ambiguity: float | None = None,
) -> tuple[tuple[int, str, float] | None, str | None]:
    """:func:`pick_reference`, and why none was taken although a candidate was there:
    another vertebra within ``ambiguity`` of the reference's probability, over the
    threshold or not (not looked for when ``ambiguity`` is None)."""
    candidates = []
    for k, name in enumerate(classes):
        if name not in REFERENCES or name not in allowed:
            continue
        column = np.asarray(prob)[:, k]
        hits = np.flatnonzero(column >= threshold)
        if hits.size == 0:
            continue
        index = int(hits[0] if name == "C2" else hits[-1])
        candidates.append((float(column[index]), index, name, column))
    if not candidates:
        return None, None
    p, index, name, column = max(candidates, key=lambda c: c[0])
    if ambiguity is None:
        return (index, name, p), None
    # Rivals under the threshold count too: raising it must not hide a look-alike.
    rivals = [int(i) for i in np.flatnonzero(column >= p - ambiguity) if i != index]
    if rivals:
        return None, (
            f"{len(rivals) + 1} vertebrae look like {name} (p {p:.2f} and "
            f"{max(float(column[i]) for i in rivals):.2f})"
        )
    return (index, name, p), None


def dens_apart(inputs: NamingInputs, threshold: float) -> bool:
    """Whether the chain's top body is the upper part of C2 outlined apart from C2's body:
    the dens (with C1's ring in front of it), which the stack outlines as a body of its own
    on films of the 3-D renderer. It then holds three things at once:

    - the header allows C2 and the identifier takes the top body for C2 (at least
      ``threshold``): the dens is what it recognises C2 by;
    - it sits on the body below with less than :data:`C2_CLEARANCE` of the chain's usual
      disc space between them: the dens grows out of C2's body, with no disc;
    - it is smaller than :data:`DENS_RATIO` times the bodies below it, as a whole C2 with
      its dens never is.

    Such a chain is named once the two are joined as one C2. A C3 taken for C2 (C2
    missed) has C3's disc below it, and a whole C2 carries its dens: neither is joined.
    """
    if "C2" not in inputs.references or inputs.clearances is None or len(inputs.sizes) < 3:
        return False  # no chain to speak of: nothing below a top body to sit on
    if np.asarray(inputs.probabilities)[0, 1 + REFERENCES.index("C2")] < threshold:
        return False
    disc = _disc_over_usual(inputs.clearances, 0)
    size = _size_over_below(inputs.sizes, 0)
    return disc is not None and disc < C2_CLEARANCE and size is not None and size < DENS_RATIO


def _size_over_below(sizes: Sequence[float], index: int) -> float | None:
    """The size of body ``index`` over the median of the next two (:data:`DENS_RATIO`);
    None where the chain has fewer below it."""
    if len(sizes) < index + 3:
        return None
    below = float(np.median(np.asarray(sizes[index + 1 : index + 3], np.float64)))
    return sizes[index] / below if below > 0 else None


def _disc_over_usual(clearance: Sequence[float], index: int) -> float | None:
    """The clearance below body ``index`` over the chain's median (:data:`C2_CLEARANCE`);
    None on a chain of fewer than three clearances, or with none to speak of."""
    if len(clearance) < 3 or index >= len(clearance):
        return None
    usual = float(np.median(np.asarray(clearance, np.float64)))
    return clearance[index] / usual if usual > 0 else None


@dataclass(frozen=True)
class NamingInputs:
    """What a chain's names are chosen from: the identifier's probabilities per vertebra,
    the bodies' centres and sizes (working pixels), the millimetres per working pixel when
    the film has a spacing, the references its header allows, and the clearance between
    neighbours' masks (:func:`clearances`) where the masks were at hand and the header
    allows C2 (only a chain named from C2 is checked with it)."""

    probabilities: NDArray[np.floating]
    centres: Sequence[tuple[float, float]]
    sizes: Sequence[float]
    mm_per_pixel: float | None
    references: frozenset[str]
    clearances: Sequence[float] | None = None

    @property
    def sizes_mm(self) -> list[float] | None:
        """The bodies' sizes in mm; None without a spacing."""
        if self.mm_per_pixel is None:
            return None
        return [s * self.mm_per_pixel for s in self.sizes]

    def name(
        self, threshold: float
    ) -> tuple[list[Named], tuple[int, str, float] | None, str | None]:
        """Names at reference ``threshold``: (names, the reference used or None, the reason
        for abstaining or None). A chain that fails :func:`naming_doubt` gets positions;
        one that passes is named from the reference up to its first crowded gap
        (:func:`stop_at_anomalies`), and the reason then says how many were left unnamed."""
        count = len(self.sizes)
        reference, ambiguous = (
            _reference_or_doubt(
                self.probabilities, self.references, threshold, ("other", *REFERENCES), AMBIGUITY
            )
            if len(self.probabilities)
            else (None, None)
        )
        if ambiguous is not None:
            return name_chain(count, None), None, ambiguous
        skipped = skipped_vertebrae(
            self.centres, self.sizes, reference=None if reference is None else reference[0]
        )
        names = name_chain(count, reference, skipped)
        doubt = naming_doubt(
            names, reference, self.sizes_mm, self.sizes, self.centres, self.clearances
        )
        if doubt is not None:
            return name_chain(count, None), reference, doubt
        if reference is not None:
            crowded = crowded_gaps(self.centres, self.sizes)
            unclear = unclear_gaps(self.centres, self.sizes, reference[0])
            names, unnamed = stop_at_anomalies(
                names,
                reference[0],
                [a or b for a, b in zip(crowded, unclear, strict=True)],
                off_axis(self.centres, self.sizes),
            )
            if unnamed:
                doubt = (
                    f"{unnamed} vertebra{'e' if unnamed > 1 else ''} past a gap too short or "
                    "too long to count by, or a body off the column, left unnamed"
                )
        return names, reference, doubt
