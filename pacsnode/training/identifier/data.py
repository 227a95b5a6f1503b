"""Identifier patches cut from phantoms: per vertebra wholly on the film, a jittered frame as
the segmenter's data draws it, widened by the identifier's context, labelled C2, S1 or
other; and the same frame turned 180 degrees (axis reversed), always labelled other, so the
classifier learns that a reference vertebra seen upside down is not one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.identify import CLASSES, CONTEXT, identifier_frame
from pacsnode.analysis.patches import PATCH_SIZE, PatchFrame, normalise_patch
from pacsnode.training.annotations import phantom_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.region.data import vertebra_geometry
from pacsnode.training.segmenter.data import (
    DEFAULT_RENDER_PX,
    NO_JITTER,
    Jitter,
    annotated_frame,
    outline_on_film,
    vertebra_frame,
)

__all__ = ["IdentifierSet", "class_of", "identifier_patches", "reversed_frame"]


def class_of(label: str, reversed_: bool = False) -> int:
    """Index in :data:`CLASSES` of a vertebra named ``label``, seen upright or reversed."""
    if reversed_ or label not in CLASSES:
        return CLASSES.index("other")
    return CLASSES.index(label)


def reversed_frame(frame: PatchFrame) -> PatchFrame:
    """``frame`` turned 180 degrees about its centre: the axis runs tail to head."""
    return frame.turned()


@dataclass
class IdentifierSet:
    """Identifier patches and what they show.

    Attributes
    ----------
    images
        (N, size, size) normalised patches.
    labels
        (N,) class indices into :data:`CLASSES`.
    reversed
        (N,) the frame's axis was turned to run tail to head.
    films
        (N,) index of the film in the set (0 for the first film generated).
    regions
        Per film, "cervical", "lumbar" or "chest".
    cases
        Per patch, (case id, vertebra label).
    """

    images: NDArray[np.float32]
    labels: NDArray[np.int64]
    reversed: NDArray[np.bool_]
    films: NDArray[np.int64]
    regions: list[str] = field(default_factory=list)
    cases: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(CLASSES)}


def identifier_patches(
    seed: int,
    n: int,
    *,
    start: int = 0,
    region: str = "mixed",
    render_px: int = DEFAULT_RENDER_PX,
    jitter: Jitter | None = None,
    context: float = CONTEXT,
    size: int = PATCH_SIZE,
    reverse: bool = True,
    frames: str = "corners",
    progress: Any = None,
) -> IdentifierSet:
    """The identifier patches of phantom cases ``start`` … ``start + n - 1`` of set ``seed``.

    Every vertebra whose outline lies wholly on the film gives one upright patch and, with
    ``reverse``, one reversed patch of the same (jittered) frame. The jitter is seeded by
    the case, so the set is the same every time. ``frames`` "outline" sizes each frame by
    the outline's extent along and across the spine (as the stack frames vertebrae; for
    C2 that includes the dens), "corners" by the body's corners and heights.
    """
    images: list[NDArray[np.float32]] = []
    labels: list[int] = []
    turned: list[bool] = []
    films: list[int] = []
    result = IdentifierSet(
        np.zeros((0, size, size), np.float32),
        np.zeros(0, np.int64),
        np.zeros(0, bool),
        np.zeros(0, np.int64),
    )
    for film_no, index in enumerate(range(start, start + n)):
        phantom = make_phantom(seed, index, region, size_px=render_px)
        film = phantom.radiograph.display
        result.regions.append(phantom.scene.region)
        # A stream of its own (not the segmenter's [seed, index, 7]), same jitter law.
        rng = None if jitter is None else np.random.default_rng([seed, index, 11])
        geometry = vertebra_geometry(phantom_film(phantom)) if frames == "outline" else None
        for k, vertebra in enumerate(phantom.truth["vertebrae"]):
            if not outline_on_film(np.asarray(vertebra["outline"], np.float64), film.shape):
                continue
            if geometry is None:
                seg_frame = vertebra_frame(vertebra, rng, jitter or NO_JITTER)
            else:  # sized by the outline's extent, as the stack frames each vertebra
                _, centre, axis, extent = geometry[k]
                seg_frame = annotated_frame(centre, axis, extent, rng, jitter or NO_JITTER)
            frame = identifier_frame(seg_frame, context, size)
            label = str(vertebra["label"])
            for rev in (False, True) if reverse else (False,):
                f = reversed_frame(frame) if rev else frame
                images.append(normalise_patch(f.extract(film)))
                labels.append(class_of(label, rev))
                turned.append(rev)
                films.append(film_no)
                result.cases.append((phantom.case_id, label))
        if progress is not None:
            progress(1)
    if images:
        result.images = np.stack(images)
        result.labels = np.asarray(labels, np.int64)
        result.reversed = np.asarray(turned, bool)
        result.films = np.asarray(films, np.int64)
    return result
