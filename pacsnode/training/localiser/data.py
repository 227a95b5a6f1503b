"""Training and evaluation data for the localiser: films brought into the paper's low-resolution
frame together with their ground truth, the union of the vertebra outlines.

Two sources: the project's phantoms (seed and count, cached on disk) and a folder of real
annotated films, so that a hospital can retrain on its own images.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pacsnode.analysis.lowres import SquareFrame
from pacsnode.errors import ImageReadError, PacsnodeError
from pacsnode.training.phantom.geometry import polygon_mask

__all__ = [
    "DataError",
    "LowresSet",
    "film_pairs",
    "folder_set",
    "outline_mask",
    "phantom_set",
    "read_annotated_film",
    "spine_region_mask",
]

# Bump when the arrays a cache file holds would change for the same arguments (2: outline
# masks by pixel centre, not PIL's polygon fill; 3: the target includes the disc spaces).
CACHE_VERSION = 3
FILM_SUFFIXES = (".dcm", ".dicom", "", ".png")


class DataError(PacsnodeError):
    """A training or evaluation data source that cannot be used, and why."""


@dataclass(frozen=True)
class LowresSet:
    """Films in the low-resolution frame: ``images`` (N, S, S) float32 in [0, 1] with bone
    bright, ``masks`` (N, S, S) bool, and a name per film."""

    images: NDArray[np.float32]
    masks: NDArray[np.bool_]
    names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.names)


def outline_mask(truth: dict[str, Any], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """Union of the vertebra outlines of a ground-truth document (phantom truth format), as a
    (rows, cols) mask of pixels whose centre lies inside an outline."""
    mask = np.zeros(shape, dtype=bool)
    for vertebra in truth.get("vertebrae", []):
        outline = np.asarray(vertebra["outline"], dtype=np.float64)
        if outline.ndim != 2 or outline.shape[1] != 2 or len(outline) < 3:
            raise DataError(f"vertebra {vertebra.get('label', '?')}: outline is not a polygon")
        mask |= polygon_mask(outline, shape)
    return mask


def spine_region_mask(truth: dict[str, Any], shape: tuple[int, int]) -> NDArray[np.bool_]:
    """The localisation target: the vertebral bodies and the disc spaces between them.

    The paper resizes its vertebra segmentations and gets "a single connected region" that
    also covers the discs (its Fig. 1). The phantoms' discs are wider than a low-resolution
    pixel, so the resized union of outlines alone falls apart into one region per vertebra,
    which the region-aware term would then fight. Each pair of neighbouring vertebrae
    (consecutive in the list, as the ground truth orders them from the top) is therefore
    bridged by the quadrilateral between the upper one's inferior corners and the lower one's
    superior corners. Outlines without corners are used as they are.
    """
    mask = outline_mask(truth, shape)
    vertebrae = truth.get("vertebrae", [])
    for upper, lower in itertools.pairwise(vertebrae):
        cu, cl = upper.get("corners"), lower.get("corners")
        if not cu or not cl:
            continue
        bridge = np.array(
            [
                cu["anterior_inferior"],
                cu["posterior_inferior"],
                cl["posterior_superior"],
                cl["anterior_superior"],
            ],
            dtype=np.float64,
        )
        mask |= polygon_mask(bridge, shape)
    return mask


def _cache_dir() -> Path:
    if os.environ.get("PACSNODE_CACHE"):
        return Path(os.environ["PACSNODE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pacsnode"


def _phantom_lowres(job: tuple[int, int, str, int, int, str]) -> tuple[NDArray, NDArray, str]:
    from pacsnode.training.phantom.generate import make_phantom

    seed, index, region, render_px, size, appearance = job
    ph = make_phantom(seed, index, region, size_px=render_px, appearance=appearance)
    image = ph.radiograph.display
    frame = SquareFrame(*image.shape, size)
    mask = spine_region_mask(ph.truth, image.shape)
    lowres = frame.to_lowres(image)[0, 0].numpy()
    return np.clip(lowres, 0.0, 1.0), frame.mask_to_lowres(mask), ph.case_id


def phantom_set(
    seed: int,
    n: int,
    *,
    size: int = 100,
    region: str = "mixed",
    render_px: int = 320,
    workers: int = 1,
    cache: bool = True,
    appearance: str = "classic",
    progress: Callable[[Iterator[Any], int], Iterator[Any]] | None = None,
) -> LowresSet:
    """Phantoms ``seed``-0 .. ``seed``-(n-1) rendered with their longest side at ``render_px``
    pixels and brought to ``size`` x ``size``. Cached under ``$PACSNODE_CACHE`` (default
    ``~/.cache/pacsnode``) so that the six variants of an experiment share one rendering."""
    look = "" if appearance == "classic" else f"-{appearance}"
    name = (
        f"localiser-phantoms-v{CACHE_VERSION}-s{seed}-n{n}-{region}-r{render_px}-x{size}{look}.npz"
    )
    path = _cache_dir() / name
    if cache and path.exists():
        with np.load(path) as z:
            return LowresSet(z["images"], z["masks"], tuple(z["names"].tolist()), f"cache {path}")
    jobs = [(seed, i, region, render_px, size, appearance) for i in range(n)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterator[Any] = pool.map(_phantom_lowres, jobs, chunksize=8)
            results = progress(results, n) if progress else results
            out = list(results)
    else:
        results = map(_phantom_lowres, jobs)
        out = list(progress(results, n) if progress else results)
    images = np.stack([o[0] for o in out]).astype(np.float32)
    masks = np.stack([o[1] for o in out])
    names = tuple(o[2] for o in out)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, images=images, masks=masks, names=np.array(names))
        tmp.replace(path)
    return LowresSet(images, masks, names, f"phantoms seed {seed} n {n} ({region}, {appearance})")


def film_pairs(directory: Path) -> list[tuple[Path, Path]]:
    """(film, annotation) pairs of a training folder.

    An annotation is ``<stem>.json`` (the phantom ground-truth format: ``vertebrae`` with
    ``outline`` polygons in stored-pixel (x, y) coordinates) or ``<stem>.mask.png`` (non-zero
    = spine). Its film is ``<stem>.dcm``, ``<stem>.dicom``, ``<stem>`` (DICOM) or
    ``<stem>.png``, in that order, so a folder written by ``pacsnode phantom`` can be used as
    it is (its ``.png`` files are previews next to a ``.dcm``; its set manifest, a JSON with
    no film, is passed over).
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    pairs = []
    for ann in sorted(directory.iterdir()):
        if ann.name.endswith(".mask.png"):
            stem = ann.name[: -len(".mask.png")]
        elif ann.suffix == ".json":
            stem = ann.stem
        else:
            continue
        film = next(
            (directory / (stem + s) for s in FILM_SUFFIXES if (directory / (stem + s)).is_file()),
            None,
        )
        if film is None:
            if ann.suffix == ".json":
                continue  # a JSON with no film beside it is not an annotation (a set manifest)
            raise DataError(f"{ann}: no film {stem}.dcm, {stem}.dicom, {stem} or {stem}.png")
        pairs.append((film, ann))
    if not pairs:
        raise DataError(
            f"{directory}: no annotated films (expected <name>.json or <name>.mask.png "
            "next to each film)"
        )
    return pairs


def _read_png(path: Path) -> NDArray[np.float32]:
    with Image.open(path) as img:
        arr = np.asarray(img.convert("I;16") if img.mode in ("I", "I;16") else img.convert("L"))
    arr = arr.astype(np.float32)
    top = 65535.0 if arr.max() > 255 else 255.0
    return arr / top


def read_annotated_film(
    film: Path, annotation: Path
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
    """A film (bone bright, [0, 1]) with two (rows, cols) masks: its vertebral bodies, and
    the localisation target (:func:`spine_region_mask`). A mask PNG gives both."""
    if film.suffix.lower() == ".png":
        image = _read_png(film)
    else:
        from pacsnode.imaging import read_film

        try:
            image = read_film(film).image
        except ImageReadError as exc:
            raise DataError(f"{film}: {exc}") from exc
    if annotation.suffix == ".json":
        try:
            truth = json.loads(annotation.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{annotation}: not readable JSON ({exc})") from exc
        if not isinstance(truth, dict) or not isinstance(truth.get("vertebrae"), list):
            raise DataError(f"{annotation}: no 'vertebrae' list of outlines")
        vertebrae, region = outline_mask(truth, image.shape), spine_region_mask(truth, image.shape)
    else:
        with Image.open(annotation) as img:
            vertebrae = region = np.asarray(img.convert("L")) > 0
        if vertebrae.shape != image.shape:
            raise DataError(f"{annotation}: mask {vertebrae.shape} but film {image.shape}")
    if not vertebrae.any():
        raise DataError(f"{annotation}: the annotation marks no pixel")
    return image, vertebrae, region


def folder_set(directory: Path, *, size: int = 100) -> LowresSet:
    """Every annotated film of ``directory`` (see :func:`film_pairs`) in the low-res frame."""
    images, masks, names = [], [], []
    for film, ann in film_pairs(directory):
        image, _, region = read_annotated_film(film, ann)
        frame = SquareFrame(*image.shape, size)
        images.append(np.clip(frame.to_lowres(image)[0, 0].numpy(), 0.0, 1.0))
        masks.append(frame.mask_to_lowres(region))
        names.append(film.name)
    return LowresSet(
        np.stack(images).astype(np.float32), np.stack(masks), tuple(names), str(directory)
    )
