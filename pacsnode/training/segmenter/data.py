"""Vertebra patches for the shape-aware patch segmenter, cut from phantoms with exact
outlines: a 64 x 64 patch per vertebra, centred on its body and turned to the local spine
axis, its target the outline rasterised in patch coordinates.

At inference the centre and axis come from the detector; training jitters them by about
what a detector misses by, so the segmenter does not rely on a perfect centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.patches import PATCH_MARGIN, PATCH_SIZE, PatchFrame, normalise_patch
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.geometry import polygon_mask

__all__ = [
    "DEFAULT_RENDER_PX",
    "PATCH_MARGIN",
    "Jitter",
    "PatchSet",
    "annotated_frame",
    "folder_patches",
    "normalise_patch",
    "outline_on_film",
    "phantom_patches",
    "repeat_labels",
    "vertebra_frame",
]

DEFAULT_RENDER_PX = 800
"""Phantoms are rendered with their long side at this many pixels: a body is then about
60 px tall, close to the 64 px patch, so patches are not upsampled much."""


@dataclass(frozen=True)
class Jitter:
    """How far training frames stray from the true centre, axis and size.

    Attributes
    ----------
    shift
        Standard deviation of the centre shift, as a fraction of the body's extent.
    angle_deg
        Standard deviation of the axis turn, degrees.
    scale
        Standard deviation of the log size factor.
    """

    shift: float = 0.08
    angle_deg: float = 6.0
    scale: float = 0.08


NO_JITTER = Jitter(0.0, 0.0, 0.0)


def _extent(vertebra: dict[str, Any]) -> float:
    if "extent" in vertebra["heights_px"]:  # an annotated vertebra, measured on its outline
        return float(vertebra["heights_px"]["extent"])
    c = {k: np.asarray(v) for k, v in vertebra["corners"].items()}
    width = (
        np.linalg.norm(c["anterior_superior"] - c["posterior_superior"])
        + np.linalg.norm(c["anterior_inferior"] - c["posterior_inferior"])
    ) / 2
    return float(max(width, max(vertebra["heights_px"].values())))


def vertebra_frame(
    vertebra: dict[str, Any],
    rng: np.random.Generator | None = None,
    jitter: Jitter = NO_JITTER,
    size: int = PATCH_SIZE,
) -> PatchFrame:
    """The patch frame of one vertebra of a phantom's truth (film pixel coordinates):
    centred on its centroid, its axis from the superior to the inferior endplate
    midpoint, ``PATCH_MARGIN`` times its extent across; jittered when ``rng`` is given."""
    centre = np.asarray(vertebra["centroid"], np.float64)
    mids = vertebra["endplate_midpoints"]
    axis = np.asarray(mids["inferior"], np.float64) - np.asarray(mids["superior"], np.float64)
    extent = _extent(vertebra)
    scale = PATCH_MARGIN * extent / size
    if rng is not None:
        centre = centre + rng.normal(0.0, jitter.shift * extent, 2)
        turn = math.radians(rng.normal(0.0, jitter.angle_deg))
        axis = np.array(
            [
                axis[0] * math.cos(turn) - axis[1] * math.sin(turn),
                axis[0] * math.sin(turn) + axis[1] * math.cos(turn),
            ]
        )
        scale *= math.exp(rng.normal(0.0, jitter.scale))
    return PatchFrame(
        (float(centre[0]), float(centre[1])), (float(axis[0]), float(axis[1])), scale, size
    )


@dataclass
class PatchSet:
    """Patches, their target masks and outlines.

    Attributes
    ----------
    images
        (N, size, size) normalised patches.
    masks
        (N, size, size) uint8 targets.
    outlines
        Per patch, the true outline (M, 2) in patch (u, v) coordinates.
    scales
        Per patch, film pixels per patch pixel (to report errors in film pixels).
    cases
        Per patch, (case id, vertebra label).
    """

    images: NDArray[np.float32]
    masks: NDArray[np.uint8]
    outlines: list[NDArray[np.float64]] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    cases: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def repeat_labels(patches: PatchSet, labels: tuple[str, ...], times: int) -> PatchSet:
    """``patches`` with every patch of a vertebra named in ``labels`` present ``times``
    times (each epoch then draws it that often, under fresh augmentation).

    C2 and S1 are rare (one body of each in a cervical or lumbar film) and unlike their
    neighbours: C2 carries the dens, S1 the sacrum. A segmenter that cuts C2's dens makes
    the naming's dens check abstain on a true C2."""
    if times < 1:
        raise ValueError(f"times must be at least 1, got {times}")
    keep = [i for i, (_, label) in enumerate(patches.cases) if label in labels]
    if times == 1 or not keep:
        return patches
    order = list(range(len(patches))) + keep * (times - 1)
    return PatchSet(
        patches.images[order],
        patches.masks[order],
        [patches.outlines[i] for i in order],
        [patches.scales[i] for i in order],
        [patches.cases[i] for i in order],
    )


def outline_on_film(outline: NDArray[np.float64], shape: tuple[int, int]) -> bool:
    """Whether every point of an outline (x, y) lies on a (rows, cols) film."""
    rows, cols = shape
    return bool(
        (outline[:, 0] >= 0).all()
        and (outline[:, 1] >= 0).all()
        and (outline[:, 0] <= cols).all()
        and (outline[:, 1] <= rows).all()
    )


def phantom_patches(
    seed: int,
    n: int,
    *,
    start: int = 0,
    region: str = "mixed",
    render_px: int = DEFAULT_RENDER_PX,
    jitter: Jitter | None = None,
    size: int = PATCH_SIZE,
    progress: Any = None,
    appearance: str = "classic",
) -> PatchSet:
    """The patches of phantom cases ``start`` … ``start + n - 1`` of set ``seed``.

    Every vertebra whose outline lies wholly on the film gives one patch; with ``jitter``
    its frame is drawn around the true one (seeded by the case, so the set is the same
    every time).
    """
    images, masks = [], []
    result = PatchSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    for index in range(start, start + n):
        phantom = make_phantom(seed, index, region, size_px=render_px, appearance=appearance)
        film = phantom.radiograph.display
        rng = None if jitter is None else np.random.default_rng([seed, index, 7])
        for vertebra in phantom.truth["vertebrae"]:
            outline = np.asarray(vertebra["outline"], np.float64)
            if not outline_on_film(outline, film.shape):
                continue
            frame = vertebra_frame(vertebra, rng, jitter or NO_JITTER, size)
            uv = frame.to_patch(outline[:, 0], outline[:, 1])
            images.append(normalise_patch(frame.extract(film)))
            masks.append(polygon_mask(uv, (size, size)).astype(np.uint8))
            result.outlines.append(uv)
            result.scales.append(frame.scale)
            result.cases.append((phantom.case_id, str(vertebra["label"])))
        if progress is not None:
            progress(1)
    if images:
        result.images = np.stack(images)
        result.masks = np.stack(masks)
    return result


def annotated_frame(
    centre: NDArray[np.float64],
    axis: NDArray[np.float64],
    extent: float,
    rng: np.random.Generator | None = None,
    jitter: Jitter = NO_JITTER,
    size: int = PATCH_SIZE,
) -> PatchFrame:
    """:func:`vertebra_frame` for an annotated vertebra given by its centre, head-to-tail
    axis and extent (from :func:`pacsnode.training.region.data.vertebra_geometry`)."""
    truth = {
        "centroid": [float(centre[0]), float(centre[1])],
        "endplate_midpoints": {
            "superior": [float(centre[0] - axis[0]), float(centre[1] - axis[1])],
            "inferior": [float(centre[0] + axis[0]), float(centre[1] + axis[1])],
        },
        "corners": {
            key: [float(centre[0]), float(centre[1])]
            for key in (
                "anterior_superior",
                "posterior_superior",
                "anterior_inferior",
                "posterior_inferior",
            )
        },
        "heights_px": {"extent": float(extent)},
    }
    return vertebra_frame(truth, rng, jitter, size)


def folder_patches(
    films: list[Any],
    *,
    jitter: Jitter | None = None,
    seed: int = 0,
    size: int = PATCH_SIZE,
    progress: Any = None,
    appearance: str = "classic",
) -> PatchSet:
    """Patches of annotated films (:class:`~pacsnode.training.annotations.AnnotatedFilm`,
    e.g. read from a hospital's folder): a frame per vertebra from its outline's centre,
    the spine direction (endplates, or neighbouring centres) and its extent.

    Real films come at any size; each is first reduced to the working image the node
    analyses (long side 800 px), so patches look as they will in service."""
    from pacsnode.analysis.region import working_image
    from pacsnode.training.region.data import vertebra_geometry

    images, masks = [], []
    result = PatchSet(np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8))
    for number, film in enumerate(films):
        work, factor = working_image(film.image)
        rng = None if jitter is None else np.random.default_rng([seed, number, 7])
        for vertebra, (outline, centre, axis, extent) in zip(
            film.vertebrae, vertebra_geometry(film), strict=True
        ):
            outline = outline / factor
            if not outline_on_film(outline, work.shape):
                continue
            frame = annotated_frame(
                centre / factor, axis, extent / factor, rng, jitter or NO_JITTER, size
            )
            uv = frame.to_patch(outline[:, 0], outline[:, 1])
            images.append(normalise_patch(frame.extract(work)))
            masks.append(polygon_mask(uv, (size, size)).astype(np.uint8))
            result.outlines.append(uv)
            result.scales.append(frame.scale * factor)
            result.cases.append((film.case_id, str(vertebra.label)))
        if progress is not None:
            progress(1)
    if images:
        result.images = np.stack(images)
        result.masks = np.stack(masks)
    return result
