"""Spine region samples for the semantic UNet and the vertebra detector: the region frame
of a film cut as the node cuts it, with every vertebra's body mask, centre, head-to-tail
direction and size drawn in the frame.

At inference the frame comes from the localiser's box, with its head end unknown; in
training it comes from the true spine region's box, jittered by about what the localiser
misses by, and turned end over end half of the time, so the networks see the spine
either way up (the orienter, not the region networks, tells which way it is).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.lowres import OrientedBox, oriented_box
from pacsnode.analysis.patches import PatchFrame
from pacsnode.analysis.region import normalise_region, region_frame
from pacsnode.training.annotations import AnnotatedFilm
from pacsnode.training.localiser.data import DataError, _cache_dir
from pacsnode.training.phantom.geometry import polygon_mask

__all__ = [
    "CHANNELS",
    "RegionJitter",
    "RegionSet",
    "film_samples",
    "heat_sigma",
    "region_set",
    "vertebra_geometry",
]

CHANNELS = ("body", "heat", "log_extent")
"""Target channels: body mask, centre heatmap, log of the body's extent in frame pixels
(written where the body's Gaussian is the highest)."""

FRONT_FIRST_SOURCES = ("phantom", "outline-json")
"""Annotation sources whose endplates are given anterior end first (the orienter learns
the front side only from these)."""

HEAT_SIGMA = 0.12
"""Heatmap Gaussian width as a fraction of the body's extent."""

CACHE_VERSION = 2


def heat_sigma(extent: float) -> float:
    return max(1.0, HEAT_SIGMA * extent)


@dataclass(frozen=True)
class RegionJitter:
    """Standard deviations of the frame's error: centre shift (fraction of the box length
    along, of its width across), turn (degrees), log scale; and the chance of turning the
    frame end over end."""

    shift: float = 0.04
    angle_deg: float = 4.0
    scale: float = 0.08
    reverse: float = 0.5


@dataclass
class RegionSet:
    """Region samples.

    Attributes
    ----------
    images
        (N, REGION_ALONG, REGION_ACROSS) float16 normalised region images.
    targets
        (N, 3, REGION_ALONG, REGION_ACROSS) float16, channels :data:`CHANNELS`.
    centres
        Per sample, the true centres (K, 2) as (u, v) frame points and extents (K,).
    cases
        Per sample, the case id.
    """

    images: NDArray[np.float16]
    targets: NDArray[np.float16]
    centres: list[NDArray[np.float64]]
    extents: list[NDArray[np.float64]]
    cases: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def vertebra_geometry(
    film: AnnotatedFilm,
) -> list[tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]]:
    """Per annotated vertebra: outline (M, 2), centroid (2,), head-to-tail unit axis (2,),
    extent (px), in film coordinates. The first endpoint of an annotated endplate is
    its anterior end.

    The axis is the superior-to-inferior endplate midpoint direction when the endplates
    are annotated, else the direction between neighbouring centroids (the vertebrae are
    listed head first)."""
    outs = [np.asarray(v.outline, np.float64) for v in film.vertebrae]
    centroids = [_centroid(o) for o in outs]
    result = []
    for i, (vertebra, outline, centre) in enumerate(
        zip(film.vertebrae, outs, centroids, strict=True)
    ):
        if vertebra.superior is not None and vertebra.inferior is not None:
            axis = np.mean(vertebra.inferior, axis=0) - np.mean(vertebra.superior, axis=0)
        elif len(centroids) > 1:
            lo, hi = max(i - 1, 0), min(i + 1, len(centroids) - 1)
            axis = centroids[hi] - centroids[lo]
        else:
            raise DataError(f"{film.case_id}: a lone vertebra without endplates has no axis")
        norm = float(np.hypot(*axis))
        if norm == 0.0:
            raise DataError(f"{film.case_id}: vertebra {vertebra.label} has no direction")
        axis = axis / norm
        across = np.array([axis[1], -axis[0]])
        rel = outline - centre
        extent = max(float(np.ptp(rel @ axis)), float(np.ptp(rel @ across)))
        result.append((outline, centre, axis, extent))
    return result


def _centroid(poly: NDArray[np.float64]) -> NDArray[np.float64]:
    x, y = poly[:, 0], poly[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area = cross.sum() / 2.0
    if abs(area) < 1e-9:
        return poly.mean(axis=0)
    return np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / (6.0 * area)


def spine_box(film: AnnotatedFilm) -> OrientedBox:
    """The oriented box of the annotated bodies: what the localiser's box is around."""
    mask = np.zeros(film.image.shape, bool)
    for outline, *_ in vertebra_geometry(film):
        mask |= polygon_mask(outline, mask.shape)
    box = oriented_box(mask)
    if box is None:
        raise DataError(f"{film.case_id}: no annotated vertebra lies on the film")
    return box


def jittered_frame(box: OrientedBox, rng: np.random.Generator, jitter: RegionJitter) -> PatchFrame:
    """The region frame of a box moved, turned and scaled by a draw of ``jitter``."""
    frame = region_frame(box)
    angle = math.radians(box.angle_deg)
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([along[1], -along[0]])
    shift = rng.normal(0.0, jitter.shift, 2) * np.array([box.length, box.width])
    centre = np.asarray(frame.centre) + shift[0] * along + shift[1] * across
    turn = math.radians(rng.normal(0.0, jitter.angle_deg))
    axis = np.array(
        [
            along[0] * math.cos(turn) - along[1] * math.sin(turn),
            along[0] * math.sin(turn) + along[1] * math.cos(turn),
        ]
    )
    if rng.random() < jitter.reverse:
        axis = -axis
    scale = frame.scale * math.exp(rng.normal(0.0, jitter.scale))
    return PatchFrame(
        (float(centre[0]), float(centre[1])),
        (float(axis[0]), float(axis[1])),
        scale,
        frame.size,
        frame.length,
    )


def film_samples(
    film: AnnotatedFilm, frames: Sequence[PatchFrame]
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Images (F, rows, cols), targets (F, 5, rows, cols), centres (F, K, 2), extents
    (F, K) of one film seen through ``frames``."""
    geometry = vertebra_geometry(film)
    images, targets, centres, extents = [], [], [], []
    for frame in frames:
        rows, cols = frame.shape
        target = np.zeros((len(CHANNELS), rows, cols), np.float32)
        vv, uu = np.mgrid[0:rows, 0:cols] + 0.5
        cs, es = [], []
        for outline, centre, _axis, extent in geometry:
            uv = frame.to_patch(outline[:, 0], outline[:, 1])
            target[0] = np.maximum(target[0], polygon_mask(uv, (rows, cols)))
            c = frame.to_patch(centre[0], centre[1])
            ext = extent / frame.scale
            sigma = heat_sigma(ext)
            heat = np.exp(-((uu - c[0]) ** 2 + (vv - c[1]) ** 2) / (2 * sigma**2))
            near = heat > target[1]
            target[1] = np.maximum(target[1], heat)
            target[2][near] = math.log(ext)
            cs.append(c)
            es.append(ext)
        images.append(normalise_region(frame.extract(film.image)))
        targets.append(target)
        centres.append(np.asarray(cs, np.float64).reshape(-1, 2))
        extents.append(np.asarray(es, np.float64))
    return np.stack(images), np.stack(targets), centres, extents


def region_set(
    films: Callable[[], Iterable[AnnotatedFilm]] | Sequence[AnnotatedFilm],
    *,
    name: str,
    frames_per_film: int,
    seed: int,
    jitter: RegionJitter | None = None,
    cache: bool = True,
    progress: Callable[[int], None] | None = None,
) -> RegionSet:
    """Region samples of ``films`` (or of what the callable returns, only when the set is
    not cached): ``frames_per_film`` jittered frames each, drawn from ``seed``.

    ``name`` keys the cache (``$PACSNODE_CACHE``); None jitter gives the true box frame
    without reversal (one frame per film)."""
    jitter_key = "none" if jitter is None else "-".join(f"{v:g}" for v in vars(jitter).values())
    path = (
        _cache_dir()
        / f"region-v{CACHE_VERSION}-{name}-f{frames_per_film}-s{seed}-j{jitter_key}.npz"
    )
    if cache and path.exists():
        return _load(path)
    rng = np.random.default_rng(seed)
    images, targets, centres, extents, cases = [], [], [], [], []
    for film in films() if callable(films) else films:
        if not film.vertebrae:
            continue
        box = spine_box(film)
        if jitter is None:
            frames = [region_frame(box)]
        else:
            frames = [jittered_frame(box, rng, jitter) for _ in range(frames_per_film)]
        im, tg, cs, es = film_samples(film, frames)
        images.append(im.astype(np.float16))
        targets.append(tg.astype(np.float16))
        centres.extend(cs)
        extents.extend(es)
        cases.extend([film.case_id] * len(frames))
        if progress is not None:
            progress(1)
    if not images:
        raise DataError("no annotated films with vertebrae")
    result = RegionSet(np.concatenate(images), np.concatenate(targets), centres, extents, cases)
    if cache:
        _save(path, result)
    return result


def _save(path: Path, data: RegionSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.array([len(c) for c in data.centres])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        images=data.images,
        targets=data.targets,
        counts=counts,
        centres=np.concatenate(data.centres) if counts.sum() else np.zeros((0, 2)),
        extents=np.concatenate(data.extents) if counts.sum() else np.zeros(0),
        cases=np.array(data.cases),
    )
    tmp.replace(path)


def _load(path: Path) -> RegionSet:
    with np.load(path) as z:
        bounds = np.cumsum(np.r_[0, z["counts"]])
        centres = [z["centres"][a:b] for a, b in itertools.pairwise(bounds)]
        extents = [z["extents"][a:b] for a, b in itertools.pairwise(bounds)]
        return RegionSet(z["images"], z["targets"], centres, extents, z["cases"].tolist())
