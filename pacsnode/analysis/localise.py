"""Stage 1 of the stack: find the spine on a film as one connected region, as the
region-aware localisation paper does it at low resolution, and map it back onto the film.

A :class:`Localiser` loads its weights once and predicts many films; torch is imported here,
not by the package, so the admin CLI starts without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage

from pacsnode.analysis.device import pick_device, place
from pacsnode.analysis.lowres import (
    OrientedBox,
    SquareFrame,
    label_regions,
    largest_component,
    oriented_box,
)
from pacsnode.analysis.networks import build_network
from pacsnode.analysis.weights import load_weights
from pacsnode.errors import ModelError

__all__ = ["Localisation", "Localiser", "pick_device", "region_from_probability"]

KIND = "localiser"


@dataclass(frozen=True)
class Localisation:
    """Where the spine is on one film.

    Attributes
    ----------
    mask
        (rows, cols) film pixels inside the spine region: the largest predicted region,
        mapped back (un-resized, un-padded). Empty when nothing was found.
    box
        The oriented bounding box of ``mask`` in film pixel (x, y) coordinates, or None.
    probability
        (size, size) spine probability of the network in the low-resolution frame.
    regions
        How many separate regions the network predicted before the largest was kept.
    """

    mask: NDArray[np.bool_]
    box: OrientedBox | None
    probability: NDArray[np.float32]
    regions: int

    @property
    def found(self) -> bool:
        return self.box is not None


class Localiser:
    """The trained localisation network and the frame geometry it was trained with."""

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        size: int,
        mean: float,
        std: float,
        threshold: float = 0.5,
        manifest: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        self.device = pick_device(device)
        self.network = place(network, self.device)
        self.size = size
        self.mean = mean
        self.std = std
        self.threshold = threshold
        self.manifest = manifest or {}

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device | None = None) -> Localiser:
        """Load ``x.safetensors`` after checking it against ``x.json``."""
        loaded = load_weights(Path(path), kind=KIND)
        m = loaded.manifest
        try:
            net_cfg = dict(m["network"])
            arch = net_cfg.pop("arch")
            network = build_network(arch, **net_cfg)
            network.load_state_dict(loaded.tensors, strict=True)
            inp = m["input"]
            return cls(
                network,
                size=int(inp["size"]),
                mean=float(inp["mean"]),
                std=float(inp["std"]),
                threshold=float(m.get("threshold", 0.5)),
                manifest=m,
                device=device,
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{loaded.path}: weights do not fit their manifest: {exc}") from exc

    def probability(self, image: NDArray[np.floating]) -> tuple[SquareFrame, NDArray[np.float32]]:
        """The low-resolution frame of ``image`` (rows, cols; bone bright in [0, 1]) and the
        network's (size, size) spine probability in it."""
        if image.ndim != 2:
            raise ValueError(f"a film is 2-D (rows, cols), got shape {image.shape}")
        frame = SquareFrame(int(image.shape[0]), int(image.shape[1]), self.size)
        x = (frame.to_lowres(image).clamp_(0.0, 1.0) - self.mean) / self.std
        with torch.inference_mode():
            scores = self.network(x.to(self.device))
            prob = scores.softmax(dim=1)[0, 1].float().cpu().numpy()
        return frame, prob

    def predict(self, image: NDArray[np.floating]) -> Localisation:
        """Localise the spine on one film (rows, cols), bone bright in [0, 1]."""
        frame, prob = self.probability(image)
        return region_from_probability(frame, prob, self.threshold)


def region_from_probability(
    frame: SquareFrame, prob: NDArray[np.float32], threshold: float
) -> Localisation:
    """Threshold a low-resolution probability map, keep the spine's regions (the largest
    and the fragments that belong with it, :func:`spine_regions`), and map them back onto
    the film of ``frame``."""
    binary = prob >= threshold
    _, n_regions = label_regions(binary)
    keep = spine_regions(binary, prob >= threshold * FRAGMENT_LINK)
    if not keep.any():
        return Localisation(np.zeros((frame.rows, frame.cols), bool), None, prob, 0)
    # Map the kept regions' probabilities (and their one-pixel rim, so the boundary is
    # interpolated, not cut) back to the film; other regions are dropped first. Only the
    # film window the regions can reach is computed.
    rim = ndimage.binary_dilation(keep, structure=np.ones((3, 3), bool))
    masked = np.where(rim, prob, 0.0).astype(np.float32)
    rr, cc = np.nonzero(rim)
    r0, r1, c0, c1 = frame.film_window((rr.min(), rr.max() + 1, cc.min(), cc.max() + 1))
    part = frame.to_film(masked, (r0, r1, c0, c1)) >= threshold
    mask = np.zeros((frame.rows, frame.cols), dtype=bool)
    mask[r0:r1, c0:c1] = part
    box = oriented_box(part)
    return Localisation(mask, box and box.translated(c0, r0), prob, n_regions)


FRAGMENT_LINK = 0.5
"""Regions joined by probability at least this share of the threshold are one spine
(hysteresis): a spine whose probability dips at one disc or under an implant breaks into
pieces above the threshold that still belong together."""

AXIS_BAND = 1.0
"""A fragment whose centre lies within this many spine widths of the spine's long axis,
and within :data:`AXIS_REACH` of its length beyond either end, is part of the spine."""

AXIS_REACH = 0.5


def spine_regions(binary: NDArray[np.bool_], linked: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The largest region of ``binary`` and the fragments of the same spine.

    A fragment belongs when a region of ``linked`` (a lower threshold) joins it to the
    spine, or when it lies along the spine's long axis (:data:`AXIS_BAND`,
    :data:`AXIS_REACH`) once the spine is long enough to have one (twice as long as
    wide). Small specks off the axis, bowel gas or a rib, stay out.
    """
    labels, n = label_regions(binary)
    if n <= 1:
        return binary.astype(bool)
    keep = largest_component(binary)
    linked_labels, _ = label_regions(linked | binary)
    touching = np.unique(linked_labels[keep])
    keep = binary & np.isin(linked_labels, touching[touching > 0])
    for _ in range(3):  # a fragment added may extend the axis to reach the next one
        box = oriented_box(keep)
        if box is None or box.length < 2 * box.width:
            break
        axis = np.array([np.cos(np.deg2rad(box.angle_deg)), np.sin(np.deg2rad(box.angle_deg))])
        normal = np.array([-axis[1], axis[0]])
        added = False
        for k in range(1, n + 1):
            region = labels == k
            if (region & keep).any():
                continue
            rr, cc = np.nonzero(region)
            offset = np.array([cc.mean() + 0.5, rr.mean() + 0.5]) - np.asarray(box.centre)
            along, across = abs(float(offset @ axis)), abs(float(offset @ normal))
            if across <= AXIS_BAND * box.width and along <= box.length * (0.5 + AXIS_REACH):
                keep = keep | region
                added = True
        if not added:
            break
    return keep
