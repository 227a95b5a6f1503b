"""Identifier patches cut from annotated films (phantoms or a hospital's folder): per
vertebra wholly on the film, a jittered frame as the segmenter's data draws it, widened by
the identifier's context, labelled C2, S1 or other; and the same frame turned 180 degrees
(axis reversed), always labelled other, so the classifier learns that a reference vertebra
seen upside down is not one.

With ``beyond``, each reference also gives a frame one vertebra further along the spine
than any vertebra goes: above C2 (the atlas and the skull base) and below S1 (the fused
sacrum, whose wedge a detector can take for a body). Labelled other, they teach the
classifier that the reference is the last vertebra of its end, not any wedge near it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.identify import CLASSES, CONTEXT, identifier_frame
from pacsnode.analysis.patches import PATCH_SIZE, PatchFrame, normalise_patch
from pacsnode.analysis.region import working_image
from pacsnode.training.annotations import AnnotatedFilm, phantom_film
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

__all__ = [
    "BEYOND",
    "INSIDE",
    "IdentifierSet",
    "class_of",
    "film_patches",
    "identifier_patches",
    "region_of",
    "reversed_frame",
]

BEYOND: Final = {"C2": "above C2", "S1": "below S1"}
"""The case label of a frame one vertebra beyond a reference (always class other)."""

INSIDE: Final = {"C2": "C3", "S1": "L5"}
"""The vertebra next to each reference on the spine's side of it: the one most like it
(C3 under C2, L5 over S1), which the stack names from when the reference itself was
missed or cut (class other)."""


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

    @property
    def past(self) -> NDArray[np.int64]:
        """(N,) for a frame one vertebra past a reference (:data:`BEYOND`), the class
        index of that reference; -1 for every other patch."""
        return self._like_reference(BEYOND, upright_only=False)

    @property
    def inside(self) -> NDArray[np.int64]:
        """(N,) for an upright patch of the vertebra next to a reference on the spine's
        side (:data:`INSIDE`), the class index of that reference; -1 for every other
        patch."""
        return self._like_reference(INSIDE, upright_only=True)

    def _like_reference(self, cases: dict[str, str], upright_only: bool) -> NDArray[np.int64]:
        """(N,) the class index of the reference whose ``cases`` entry is the patch's
        label, -1 for every other patch (and, with ``upright_only``, every reversed one)."""
        reference_of = {label: CLASSES.index(reference) for reference, label in cases.items()}
        out = np.full(len(self), -1, np.int64)
        for i, (_, label) in enumerate(self.cases):
            if label in reference_of and not (upright_only and self.reversed[i]):
                out[i] = reference_of[label]
        return out

    def class_counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(CLASSES)}


def region_of(film: AnnotatedFilm) -> str:
    """The region most of a film's named vertebrae belong to: "cervical" (C), "chest"
    (T) or "lumbar" (L and S); "chest" when none is named (a chest film shows C6 or C7
    too, a lumbar film T11 and T12)."""
    counts = {"cervical": 0, "chest": 0, "lumbar": 0}
    for vertebra in film.vertebrae:
        label = str(vertebra.label or "")
        region = {"C": "cervical", "T": "chest", "L": "lumbar", "S": "lumbar"}.get(label[:1])
        if region is not None:
            counts[region] += 1
    return max(counts, key=lambda r: (counts[r], r == "chest"))


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
    beyond: bool = False,
    progress: Any = None,
    appearance: str = "classic",
) -> IdentifierSet:
    """The identifier patches of phantom cases ``start`` … ``start + n - 1`` of set ``seed``.

    Every vertebra whose outline lies wholly on the film gives one upright patch and, with
    ``reverse``, one reversed patch of the same (jittered) frame. The jitter is seeded by
    the case, so the set is the same every time. ``frames`` "outline" sizes each frame by
    the outline's extent along and across the spine (as the stack frames vertebrae; for
    C2 that includes the dens; see :func:`film_patches`, which also takes ``beyond``),
    "corners" by the body's corners and heights.
    """
    if frames == "outline":
        phantoms = (
            make_phantom(seed, i, region, size_px=render_px, appearance=appearance)
            for i in range(start, start + n)
        )
        return film_patches(
            ((phantom_film(p), p.scene.region) for p in phantoms),
            seeds=[(seed, i) for i in range(start, start + n)],
            jitter=jitter,
            context=context,
            size=size,
            reverse=reverse,
            beyond=beyond,
            progress=progress,
        )
    if frames != "corners":
        raise ValueError(f"frames is 'corners' or 'outline', got {frames!r}")
    if beyond:
        raise ValueError("frames one vertebra beyond a reference need outline frames")
    builder = _Builder(size)
    for index in range(start, start + n):
        phantom = make_phantom(seed, index, region, size_px=render_px, appearance=appearance)
        film = phantom.radiograph.display
        builder.regions.append(phantom.scene.region)
        rng = None if jitter is None else np.random.default_rng([seed, index, 11])
        for vertebra in phantom.truth["vertebrae"]:
            if not outline_on_film(np.asarray(vertebra["outline"], np.float64), film.shape):
                continue
            frame = identifier_frame(
                vertebra_frame(vertebra, rng, jitter or NO_JITTER), context, size
            )
            builder.add(film, frame, phantom.case_id, str(vertebra["label"]), reverse)
        builder.film_done()
        if progress is not None:
            progress(1)
    return builder.result()


def film_patches(
    films: Iterable[tuple[AnnotatedFilm, str | None]],
    *,
    seeds: Sequence[Any] | None = None,
    jitter: Jitter | None = None,
    context: float = CONTEXT,
    size: int = PATCH_SIZE,
    reverse: bool = True,
    beyond: bool = False,
    progress: Any = None,
    appearance: str = "classic",
) -> IdentifierSet:
    """The identifier patches of annotated films, each given with its region (None: from
    its labels, :func:`region_of`).

    Each film is first reduced to the working image the node analyses (long side 800 px);
    each vertebra wholly on it is framed from its outline's centre, the spine direction
    (endplates, or neighbouring centres) and its extent, as the stack frames the bodies it
    found. With ``beyond``, a C2 followed by C3 also gives a frame as far above C2 as C3
    lies below it, and an S1 after L5 one as far below S1 as L5 lies above it, labelled
    other. ``seeds`` (one per film, default its position) seed each film's jitter.
    """
    builder = _Builder(size)
    for number, (film, region) in enumerate(films):
        work, factor = working_image(film.image)
        builder.regions.append(region or region_of(film))
        key = number if seeds is None else seeds[number]
        rng = None if jitter is None else np.random.default_rng([*np.atleast_1d(key), 11])
        geometry = vertebra_geometry(film)
        labels = [str(v.label) for v in film.vertebrae]
        for k, (outline, centre, axis, extent) in enumerate(geometry):
            if not outline_on_film(outline / factor, work.shape):
                continue
            seg_frame = annotated_frame(
                centre / factor, axis, extent / factor, rng, jitter or NO_JITTER
            )
            frame = identifier_frame(seg_frame, context, size)
            builder.add(work, frame, film.case_id, labels[k], reverse)
            neighbour = {"C2": k + 1, "S1": k - 1}.get(labels[k])
            if not beyond or neighbour is None or not 0 <= neighbour < len(geometry):
                continue
            if labels[neighbour] != {"C2": "C3", "S1": "L5"}[labels[k]]:
                continue
            past = 2 * centre - geometry[neighbour][1]
            seg_frame = annotated_frame(
                past / factor, axis, extent / factor, rng, jitter or NO_JITTER
            )
            frame = identifier_frame(seg_frame, context, size)
            builder.add(work, frame, film.case_id, BEYOND[labels[k]], reverse=False)
        builder.film_done()
        if progress is not None:
            progress(1)
    return builder.result()


class _Builder:
    """Collects patches film by film into an :class:`IdentifierSet`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[NDArray[np.float32]] = []
        self.labels: list[int] = []
        self.turned: list[bool] = []
        self.films: list[int] = []
        self.cases: list[tuple[str, str]] = []
        self.regions: list[str] = []
        self._film = 0

    def add(
        self, image: NDArray[np.floating], frame: PatchFrame, case: str, label: str, reverse: bool
    ) -> None:
        """The patch of ``frame`` on ``image`` labelled ``label`` (a vertebra's name, or
        a :data:`BEYOND` label, class other) and, with ``reverse``, its reversed twin."""
        for rev in (False, True) if reverse else (False,):
            f = reversed_frame(frame) if rev else frame
            self.images.append(normalise_patch(f.extract(image)))
            self.labels.append(class_of(label, rev))
            self.turned.append(rev)
            self.films.append(self._film)
            self.cases.append((case, label))

    def film_done(self) -> None:
        self._film += 1

    def result(self) -> IdentifierSet:
        if not self.images:
            return IdentifierSet(
                np.zeros((0, self.size, self.size), np.float32),
                np.zeros(0, np.int64),
                np.zeros(0, bool),
                np.zeros(0, np.int64),
                regions=self.regions,
            )
        return IdentifierSet(
            np.stack(self.images),
            np.asarray(self.labels, np.int64),
            np.asarray(self.turned, bool),
            np.asarray(self.films, np.int64),
            regions=self.regions,
            cases=self.cases,
        )
