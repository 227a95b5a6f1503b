"""The whole analysis stack on one film: localise the spine, look at its region through the
detector and the semantic UNet, segment a patch per detected vertebra, merge the two
paths by VertXNet's rules, name the chain from a reference vertebra, and measure each body.

Everything after the localiser runs on the working image (the film reduced to the size
the networks were trained at); masks, outlines and heights are then mapped back to the
film's own pixels, where the SEG and SR put them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import measure, morphology

from pacsnode.analysis.detect import DETECTOR_KIND, SEMANTIC_KIND, Detection, TrainedUNet
from pacsnode.analysis.device import pick_device
from pacsnode.analysis.ensemble import DEFAULT_ETA, DEFAULT_LAMBDA, Ensembled, Origin, ensemble
from pacsnode.analysis.findings import read_findings
from pacsnode.analysis.identify import CLASSES, REFERENCE_THRESHOLD, Identifier
from pacsnode.analysis.localise import Localisation, Localiser
from pacsnode.analysis.lowres import largest_component
from pacsnode.analysis.measure import BodyHeights, body_heights
from pacsnode.analysis.naming import (
    REFERENCES,
    Named,
    NamingInputs,
    clearances,
    dens_apart,
    pick_reference,
)
from pacsnode.analysis.orient import Orienter
from pacsnode.analysis.patches import PATCH_MARGIN, PATCH_SIZE, PatchFrame, normalise_patch
from pacsnode.analysis.reading import SpineReading, Vertebra
from pacsnode.analysis.readout import build_readout
from pacsnode.analysis.region import normalise_region, region_frame, working_image
from pacsnode.analysis.segment import candidate_masks
from pacsnode.analysis.weights import model_version

__all__ = [
    "MODEL_FILES",
    "REFERENCE_THRESHOLD",
    "Stack",
    "StackResult",
    "outline_of",
]

MODEL_FILES = {
    "localiser": "localiser.safetensors",
    DETECTOR_KIND: "detector.safetensors",
    SEMANTIC_KIND: "semantic.safetensors",
    "segmenter": "segmenter.safetensors",
    "identifier": "identifier.safetensors",
    "orienter": "orienter.safetensors",
}
"""The weight files of the stack in a models folder."""

MIN_AREA = 30
"""Smallest vertebra mask kept, in working pixels (a body is some 2,000)."""

OUTLINE_POINTS = 64


@dataclass(frozen=True)
class StackResult:
    """The stack's output for one film.

    Attributes
    ----------
    localisation
        The localiser's spine region (stage 1).
    reading
        The named, measured vertebrae; None when no spine region was found.
    seconds
        Wall time of each stage, in order.
    paths
        With ``read(..., trace=True)``: each path's masks on the film grid before the
        ensemble, ``{"semantic": [...], "instance": [...]}``, for comparing the paths.
    """

    localisation: Localisation
    reading: SpineReading | None
    seconds: dict[str, float] = field(default_factory=dict)
    paths: dict[str, list[NDArray[np.bool_]]] | None = None
    naming: NamingInputs | None = None
    """With ``read(..., trace=True)``: what the names were chosen from, so a calibration
    can name the chain again at another threshold without running the networks."""


class _Clock:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


class Stack:
    """The loaded networks of the stack and the ensemble's parameters."""

    def __init__(
        self,
        localiser: Localiser,
        detector: TrainedUNet,
        semantic: TrainedUNet,
        segmenter: TrainedUNet,
        identifier: Identifier,
        orienter: Orienter,
        *,
        eta: float = DEFAULT_ETA,
        lam: float = DEFAULT_LAMBDA,
    ) -> None:
        self.localiser = localiser
        self.detector = detector
        self.semantic = semantic
        self.segmenter = segmenter
        self.identifier = identifier
        self.orienter = orienter
        self.eta = eta
        self.lam = lam

    @classmethod
    def load(
        cls,
        models_dir: Path,
        *,
        device: str = "cpu",
        eta: float = DEFAULT_ETA,
        lam: float = DEFAULT_LAMBDA,
    ) -> Stack:
        """Load the six networks from ``models_dir`` (:data:`MODEL_FILES`), every one of
        them onto ``device`` ("cpu", "cuda[:N]", or "auto": CUDA when torch sees it, else
        the CPU; :func:`~pacsnode.analysis.device.pick_device`).

        Raises
        ------
        ModelError
            A weight file is missing, altered, or does not fit its manifest; or the
            device is CUDA and torch cannot use it.
        """
        chosen = pick_device(device)  # once, before any weights are read
        return cls(
            Localiser.load(models_dir / MODEL_FILES["localiser"], device=chosen),
            TrainedUNet.load(models_dir / MODEL_FILES[DETECTOR_KIND], DETECTOR_KIND, chosen),
            TrainedUNet.load(models_dir / MODEL_FILES[SEMANTIC_KIND], SEMANTIC_KIND, chosen),
            TrainedUNet.load(models_dir / MODEL_FILES["segmenter"], "segmenter", chosen),
            Identifier.load(models_dir / MODEL_FILES["identifier"], device=chosen),
            Orienter.load(models_dir / MODEL_FILES["orienter"], device=chosen),
            eta=eta,
            lam=lam,
        )

    @property
    def device(self) -> str:
        """The device the networks run on, e.g. "cpu" or "cuda:0"."""
        return str(self.localiser.device)

    @property
    def versions(self) -> dict[str, str]:
        """Network name -> version (name and weights digest), for the results."""
        return {
            "localiser": model_version(self.localiser.manifest, "localiser"),
            DETECTOR_KIND: self.detector.version,
            SEMANTIC_KIND: self.semantic.version,
            "segmenter": self.segmenter.version,
            "identifier": self.identifier.version,
            "orienter": self.orienter.version,
        }

    def read(
        self,
        image: NDArray[np.floating],
        *,
        trace: bool = False,
        references: frozenset[str] = frozenset(REFERENCES),
        spacing_mm: float | None = None,
    ) -> StackResult:
        """Run the stack on one film (rows, cols), bone bright in [0, 1]; with ``trace``,
        keep each path's own masks too (slower: they are mapped to the film).

        ``references`` are the reference vertebrae the film may be named from (its
        header's region, :func:`~pacsnode.analysis.naming.references_for`); ``spacing_mm``
        the film's pixel spacing, when it has one, for checking the named bodies' size.
        A named chain that fails :func:`~pacsnode.analysis.naming.naming_doubt` is given
        positional labels instead, and the vertebrae past a body too many or an unclear gap
        on the walk from the reference likewise: a wrong vertebra name is worse than none."""
        clock = _Clock()
        localisation = self.localiser.predict(image)
        clock.lap("localise")
        if localisation.box is None:
            return StackResult(localisation, None, clock.seconds)
        work, factor = working_image(image)
        frame = region_frame(localisation.box, factor=factor)
        region = normalise_region(frame.extract(work))
        clock.lap("region")
        detections = self.detector.detect(region)
        clock.lap("detect")
        frames = _chain_frames(frame, detections)
        down, front, frames = self._orient(work, frame, frames, detections)
        clock.lap("orient")
        window = frame.footprint(work.shape)
        r0, r1, c0, c1 = window
        instance = self._instances(work, frames, window)
        clock.lap("instance")
        probability = self.semantic.probability(region)
        blobs = frame.mask_to_film(probability, work.shape)[r0:r1, c0:c1]
        semantic = candidate_masks(blobs, min_area=MIN_AREA)
        clock.lap("semantic")
        axis = tuple(float(a) for a in down)
        merged = ensemble(semantic, instance, eta=self.eta, lam=self.lam, axis=axis)
        merged = [m for m in merged if m.area >= MIN_AREA]
        clock.lap("ensemble")
        mm_per_pixel = None if spacing_mm is None else factor * spacing_mm
        inputs = self._naming_inputs(work, merged, (c0, r0), down, mm_per_pixel, references)
        if dens_apart(inputs, self.identifier.threshold):
            assert inputs.clearances is not None  # dens_apart measured the gap
            merged = [_joined(merged[0], merged[1], inputs.clearances[0]), *merged[2:]]
            inputs = self._naming_inputs(work, merged, (c0, r0), down, mm_per_pixel, references)
        names, reference, doubt = inputs.name(self.identifier.threshold)
        clock.lap("identify")
        vertebrae = []
        for entry, named in zip(merged, names, strict=True):
            part = _film_part(entry.mask, (r0, c0), factor, image.shape)
            vertebrae.append(_measure(part, image.shape, entry, named, down, front))
        vertebrae = _graded(vertebrae)
        clock.lap("measure")
        readout = build_readout(vertebrae, image, spacing_mm)
        clock.lap("readout")
        reading = SpineReading(
            tuple(vertebrae),
            reference[1] if reference and any(n.identified for n in names) else None,
            self.versions,
            abstention=doubt,
            readout=readout,
        )
        paths = None
        if trace:
            paths = {
                name: [_to_film(m, (r0, c0), factor, image.shape) for m in masks]
                for name, masks in (("semantic", semantic), ("instance", instance))
            }
        return StackResult(localisation, reading, clock.seconds, paths, inputs if trace else None)

    def _naming_inputs(
        self,
        work: NDArray[np.float32],
        merged: Sequence[Ensembled],
        offset: tuple[int, int],
        down: NDArray[np.float64],
        mm_per_pixel: float | None,
        references: frozenset[str],
    ) -> NamingInputs:
        """What the chain of ``merged`` masks (window at ``offset`` (x, y) in the working
        image) is named from: the identifier's probabilities on each body's frame, and the
        bodies' centres, sizes and clearances."""
        frames = _body_frames([m.mask for m in merged], offset, down)
        return NamingInputs(
            probabilities=self.identifier.probabilities(work, frames)
            if frames
            else np.zeros((0, len(CLASSES)), np.float32),
            centres=[f.centre for f in frames],
            sizes=[math.sqrt(m.area) for m in merged],
            mm_per_pixel=mm_per_pixel,
            references=references,
            # Only a chain named from C2 is checked against them: not measured on a film
            # whose header rules C2 out (a lumbar or chest film).
            clearances=clearances([m.mask for m in merged]) if "C2" in references else None,
        )

    def _orient(
        self,
        work: NDArray[np.float32],
        region: PatchFrame,
        frames: list[PatchFrame],
        detections: Sequence[Detection],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], list[PatchFrame]]:
        """The head-to-tail direction and the front direction (x, y) on the working image,
        by the orienter's votes over all detected bodies weighted by their detection
        scores, and the frames turned to run from the head to the tail."""
        axis = np.asarray(region.axis, np.float64) / math.hypot(*region.axis)
        across = np.array([axis[1], -axis[0]])  # the frames' +u
        if not frames:
            return axis, across, frames
        p = self.orienter.probabilities(work, frames)
        weights = np.array([d.score for d in detections])
        head_vote = float(weights @ (2 * p[:, 0] - 1))
        front_vote = float(weights @ (2 * p[:, 1] - 1))
        front = across if front_vote >= 0 else -across
        if head_vote < 0:
            return -axis, front, [f.turned() for f in frames]
        return axis, front, frames

    def _instances(
        self,
        work: NDArray[np.float32],
        frames: Sequence[PatchFrame],
        window: tuple[int, int, int, int],
    ) -> list[NDArray[np.bool_]]:
        """The instance path: each detected body's patch segmented, mapped to the window."""
        if not frames:
            return []
        patches = np.stack([normalise_patch(f.extract(work)) for f in frames])
        probabilities = self.segmenter.foreground(patches)
        r0, r1, c0, c1 = window
        masks = []
        for f, p in zip(frames, probabilities, strict=True):
            mask = largest_component(f.mask_to_film(p, work.shape)[r0:r1, c0:c1])
            if mask.sum() >= MIN_AREA:
                masks.append(mask)
        return masks

    def _reference(
        self,
        work: NDArray[np.float32],
        frames: Sequence[PatchFrame],
        allowed: frozenset[str] = frozenset(REFERENCES),
    ) -> tuple[int, str, float] | None:
        """The reference vertebra of the chain (sorted head first): (index, name,
        probability), or None when no vertebra is C2 or S1 with probability at least
        :data:`REFERENCE_THRESHOLD`.

        As VertXNet reads them, C2 is the top of a cervical film and S1 the bottom of a
        lumbar one: the topmost C2 candidate and the lowest S1 candidate are taken (a
        lordotic L5 can look like S1 too, a C3 like C2), and of the two the more
        probable. Only ``allowed`` references are considered."""
        if not frames:
            return None
        prob = self.identifier.probabilities(work, frames)
        return pick_reference(prob, allowed, self.identifier.threshold)


def _chain_frames(region: PatchFrame, detections: Sequence[Detection]) -> list[PatchFrame]:
    """A segmenter patch frame per detection on the working image, in the order of the
    detections: centred on it, sized by its extent, turned along the local spine (the
    line through its neighbours along the region's axis; the region's axis for a lone
    body), pointing the way the region's axis points."""
    if not detections:
        return []
    centres = np.array([region.to_film(d.centre[0], d.centre[1]) for d in detections])
    along = centres @ (np.asarray(region.axis, np.float64) / math.hypot(*region.axis))
    order = np.argsort(along, kind="stable")
    frames: list[PatchFrame | None] = [None] * len(detections)
    for rank, i in enumerate(order):
        before, after = order[max(rank - 1, 0)], order[min(rank + 1, len(order) - 1)]
        axis = centres[after] - centres[before]
        if before == after or math.hypot(*axis) == 0.0:
            axis = np.asarray(region.axis, np.float64)
        extent = detections[i].extent * region.scale
        frames[i] = PatchFrame(
            (float(centres[i][0]), float(centres[i][1])),
            (float(axis[0]), float(axis[1])),
            PATCH_MARGIN * extent / PATCH_SIZE,
        )
    return [f for f in frames if f is not None]


def _joined(dens: Ensembled, body: Ensembled, gap: float) -> Ensembled:
    """C2 whole again: its dens (with C1's ring) and its body, outlined apart
    (:func:`~pacsnode.analysis.naming.dens_apart`), as one mask. The disc-less ``gap``
    between them (pixels, :func:`~pacsnode.analysis.naming.clearances`), under
    :data:`~pacsnode.analysis.naming.C2_CLEARANCE` of a disc space, is closed so that C2
    has one outline."""
    union = dens.mask | body.mask
    if gap > 0:
        radius = math.ceil(gap / 2) + 1
        footprint = morphology.disk(radius)
        closed = ndimage.binary_closing(np.pad(union, radius), structure=footprint)
        union = union | closed[radius:-radius, radius:-radius]
    return Ensembled(union, Origin.DENS_JOINED)


def _body_frames(
    masks: Sequence[NDArray[np.bool_]], offset: tuple[int, int], down: NDArray[np.float64]
) -> list[PatchFrame]:
    """Segmenter-style patch frames around merged masks sorted head first (window at
    ``offset`` (x, y) in the working image): centred on each, along the line through its
    neighbours' centres (the spine curves: at S1 it may lie 40 degrees off the film's
    axis), sized by its extent."""
    centres, points = [], []
    for mask in masks:
        rows, cols = np.nonzero(mask)
        p = np.stack([cols + 0.5 + offset[0], rows + 0.5 + offset[1]], axis=1)
        points.append(p)
        centres.append(p.mean(axis=0))
    frames = []
    for i, (centre, p) in enumerate(zip(centres, points, strict=True)):
        axis = centres[min(i + 1, len(centres) - 1)] - centres[max(i - 1, 0)]
        if len(centres) == 1 or math.hypot(*axis) == 0.0:
            axis = down
        axis = axis / math.hypot(*axis)
        across = np.array([axis[1], -axis[0]])
        extent = max(float(np.ptp(p @ axis)), float(np.ptp(p @ across)), 1.0) + 1.0
        frames.append(
            PatchFrame(
                (float(centre[0]), float(centre[1])),
                (float(axis[0]), float(axis[1])),
                PATCH_MARGIN * extent / PATCH_SIZE,
            )
        )
    return frames


def _to_film(
    mask: NDArray[np.bool_], origin: tuple[int, int], factor: float, shape: tuple[int, ...]
) -> NDArray[np.bool_]:
    """A working-image mask (window at ``origin`` (row, col)) on the film's pixel grid:
    bilinear at each film pixel centre, kept at >= 0.5."""
    part, (f0, g0) = _film_part(mask, origin, factor, shape)
    film = np.zeros(shape[:2], bool)
    film[f0 : f0 + part.shape[0], g0 : g0 + part.shape[1]] = part
    return film


def _film_part(
    mask: NDArray[np.bool_], origin: tuple[int, int], factor: float, shape: tuple[int, ...]
) -> tuple[NDArray[np.bool_], tuple[int, int]]:
    """:func:`_to_film` on the film rows and columns the mask can reach only, and the
    (row, col) of that part's top-left pixel on the film."""
    rows, cols = np.nonzero(mask)
    r0, c0 = origin
    top, bottom = rows.min() + r0 - 1, rows.max() + r0 + 2
    left, right = cols.min() + c0 - 1, cols.max() + c0 + 2
    f0, f1 = max(math.floor(top * factor), 0), min(math.ceil(bottom * factor), shape[0])
    g0, g1 = max(math.floor(left * factor), 0), min(math.ceil(right * factor), shape[1])
    rr, cc = np.mgrid[f0:f1, g0:g1]
    values = ndimage.map_coordinates(
        mask.astype(np.float32),
        [(rr + 0.5) / factor - 0.5 - r0, (cc + 0.5) / factor - 0.5 - c0],
        order=1,
        mode="constant",
        cval=0.0,
    )
    return values >= 0.5, (f0, g0)


def outline_of(mask: NDArray[np.bool_], points: int = OUTLINE_POINTS) -> NDArray[np.float64]:
    """The boundary of a mask's largest part as a closed polygon (x, y) running clockwise
    on screen, first point not repeated, at most ``points`` points spread along it."""
    rows, cols = np.nonzero(mask)
    r0, c0 = rows.min(), cols.min()
    crop = np.pad(mask[r0 : rows.max() + 1, c0 : cols.max() + 1], 1).astype(np.float32)
    contour = max(measure.find_contours(crop, 0.5), key=len)[:-1]
    xy = np.stack([contour[:, 1] + c0 - 0.5, contour[:, 0] + r0 - 0.5], axis=1)
    if len(xy) > points:
        xy = xy[np.linspace(0, len(xy), points, endpoint=False).astype(int)]
    x, y = xy[:, 0], xy[:, 1]
    if np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0:  # counter-clockwise on screen
        xy = xy[::-1]
    return xy


def _measure(
    part: tuple[NDArray[np.bool_], tuple[int, int]],
    shape: tuple[int, ...],
    entry: Ensembled,
    named: Named,
    down: NDArray[np.float64],
    front: NDArray[np.float64],
) -> Vertebra:
    """One vertebra of the reading, measured on its film mask given as the part the mask
    can reach and that part's (row, col) on a film of ``shape`` (a film has millions of
    pixels, a body a few thousand)."""
    local, (f0, g0) = part
    rows, cols = np.nonzero(local)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    crop = local[r0:r1, c0:c1]
    r0, c0 = r0 + f0, c0 + g0
    mask = np.zeros(shape[:2], bool)
    mask[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]] = crop
    heights: BodyHeights | None
    try:
        measured = body_heights(
            crop,
            (float(down[0]), float(down[1])),
            (float(front[0]), float(front[1])),
            # C2's top is its dens: only its inferior endplate can frame it.
            frame_plate="inferior" if named.identified and named.label == "C2" else None,
        )
        heights = _shifted(measured, float(c0), float(r0))
    except ValueError:
        heights = None
    return Vertebra(
        label=named.label,
        confidence=named.confidence,
        identified=named.identified,
        mask=mask,
        outline=outline_of(crop) + np.array([c0, r0], np.float64),
        centroid=(float(cols.mean() + g0 + 0.5), float(rows.mean() + f0 + 0.5)),
        heights=heights,
        finding=None,
        origin=entry.origin.value,
    )


def _shifted(heights: BodyHeights, dx: float, dy: float) -> BodyHeights:
    """The same landmarks moved by (dx, dy) pixels; the heights do not change."""

    def move(point: tuple[float, float]) -> tuple[float, float]:
        return (point[0] + dx, point[1] + dy)

    return replace(
        heights,
        anterior_superior=move(heights.anterior_superior),
        anterior_inferior=move(heights.anterior_inferior),
        posterior_superior=move(heights.posterior_superior),
        posterior_inferior=move(heights.posterior_inferior),
        superior_midpoint=move(heights.superior_midpoint),
        inferior_midpoint=move(heights.inferior_midpoint),
        superior_endplate=None
        if heights.superior_endplate is None
        else (move(heights.superior_endplate[0]), move(heights.superior_endplate[1])),
        inferior_endplate=None
        if heights.inferior_endplate is None
        else (move(heights.inferior_endplate[0]), move(heights.inferior_endplate[1])),
    )


def _graded(vertebrae: list[Vertebra]) -> list[Vertebra]:
    """The chain with Genant findings read from the measured bodies."""
    measured = [i for i, v in enumerate(vertebrae) if v.heights is not None]
    findings = read_findings(
        [vertebrae[i].heights for i in measured],  # type: ignore[misc]
        [vertebrae[i].label if vertebrae[i].identified else None for i in measured],
    )
    out = list(vertebrae)
    for i, finding in zip(measured, findings, strict=True):
        out[i] = replace(out[i], finding=finding)
    return out
