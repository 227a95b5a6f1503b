"""The two networks that look at the spine region frame: the vertebra detector (each
body's centre and size; the instance path's first step) and the semantic UNet (every
body's pixels at once, trained with Dice + BCE). Which way the spine runs is the
orienter's call (:mod:`pacsnode.analysis.orient`).

Both are UNets on the normalised region (:func:`pacsnode.analysis.region.normalise_region`)
and load from safetensors with a manifest; torch is imported here, not by the package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from pacsnode.analysis.device import pick_device, place
from pacsnode.analysis.networks import build_network
from pacsnode.analysis.weights import load_weights, model_version
from pacsnode.errors import ModelError

__all__ = [
    "DETECTOR_KIND",
    "SEMANTIC_KIND",
    "Detection",
    "TrainedUNet",
    "find_peaks",
    "read_detections",
]

DETECTOR_KIND = "detector"
SEMANTIC_KIND = "semantic"

PEAK_THRESHOLD = 0.35
"""Smallest heatmap peak taken as a vertebra centre."""

PEAK_WINDOW = 9
"""Side of the window a peak must be the maximum of (region pixels): less than the
distance between two vertebral centres on any film the frame holds."""


@dataclass(frozen=True)
class Detection:
    """One vertebral body found by the detector, in region frame coordinates.

    Attributes
    ----------
    centre
        (u, v) frame point of the body's centre.
    extent
        The body's larger side in frame pixels.
    score
        Heatmap peak height in [0, 1].
    """

    centre: tuple[float, float]
    extent: float
    score: float


def find_peaks(
    heat: NDArray[np.floating], threshold: float = PEAK_THRESHOLD, window: int = PEAK_WINDOW
) -> list[tuple[float, float, float]]:
    """Local maxima of a (rows, cols) heatmap at or above ``threshold``, as (u, v, height),
    highest first; no two within half a ``window`` of each other (a flat top is one peak).

    (u, v) is refined by a parabola through the log heights of the peak and its two
    neighbours along each axis, exact for a Gaussian peak (pixel centres at +0.5)."""
    h = np.asarray(heat, np.float64)
    t = torch.as_tensor(h, dtype=torch.float32)[None, None]
    pooled = F.max_pool2d(t, window, stride=1, padding=window // 2)
    is_peak = (t == pooled) & (t >= threshold)
    rows, cols = np.nonzero(is_peak[0, 0].numpy())
    order = np.argsort(-h[rows, cols], kind="stable")
    logs = np.log(np.clip(h, 1e-12, None))
    found: list[tuple[float, float, float]] = []
    for r, c in zip(rows[order], cols[order], strict=True):
        u = (
            c
            + 0.5
            + _vertex(logs[r, max(c - 1, 0)], logs[r, c], logs[r, min(c + 1, h.shape[1] - 1)])
        )
        v = (
            r
            + 0.5
            + _vertex(logs[max(r - 1, 0), c], logs[r, c], logs[min(r + 1, h.shape[0] - 1), c])
        )
        if all(math.hypot(u - pu, v - pv) > window / 2 for pu, pv, _ in found):
            found.append((float(u), float(v), float(h[r, c])))
    return found


def _vertex(left: float, centre: float, right: float) -> float:
    """Offset in [-0.5, 0.5] of the top of the parabola through three equally spaced values."""
    curvature = left - 2 * centre + right
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def read_detections(
    output: NDArray[np.floating], threshold: float = PEAK_THRESHOLD
) -> list[Detection]:
    """Detections from the detector's (2, rows, cols) output: centre heatmap logit and
    log body extent (frame pixels), the extent read as the mean of the 3 x 3 pixels
    around each peak."""
    heat = 1.0 / (1.0 + np.exp(-np.asarray(output[0], np.float64)))
    detections = []
    for u, v, score in find_peaks(heat, threshold):
        r, c = min(int(v), heat.shape[0] - 1), min(int(u), heat.shape[1] - 1)
        r0, r1, c0, c1 = max(r - 1, 0), r + 2, max(c - 1, 0), c + 2
        extent = math.exp(float(np.mean(output[1, r0:r1, c0:c1])))
        detections.append(Detection((u, v), extent, score))
    return detections


class TrainedUNet:
    """A trained UNet of the stack (detector, semantic UNet, patch segmenter) and its
    manifest."""

    def __init__(
        self,
        network: torch.nn.Module,
        kind: str,
        manifest: dict[str, Any],
        device: str | torch.device | None = "cpu",
    ) -> None:
        self.device = pick_device(device)
        self.network = place(network, self.device)
        self.kind = kind
        self.manifest = manifest

    @classmethod
    def load(
        cls, path: Path | str, kind: str, device: str | torch.device | None = "cpu"
    ) -> TrainedUNet:
        """Load ``x.safetensors`` after checking it against ``x.json``, onto ``device``
        ("cpu", "cuda[:N]" or "auto", :func:`~pacsnode.analysis.device.pick_device`).

        Raises
        ------
        ModelError
            Missing, altered, of another kind, or not fitting its manifest.
        """
        loaded = load_weights(Path(path), kind=kind)
        try:
            net_cfg = dict(loaded.manifest["network"])
            network = build_network(net_cfg.pop("arch"), **net_cfg)
            network.load_state_dict(loaded.tensors, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{loaded.path}: weights do not fit their manifest: {exc}") from exc
        return cls(network, kind, loaded.manifest, device)

    @property
    def version(self) -> str:
        return model_version(self.manifest, self.kind)

    def outputs(self, region: NDArray[np.floating]) -> NDArray[np.float32]:
        """The raw (channels, rows, cols) output for one normalised image."""
        return self.batch_outputs(np.asarray(region)[None])[0]

    def batch_outputs(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """The raw (N, channels, rows, cols) output for (N, rows, cols) normalised images."""
        x = torch.as_tensor(np.asarray(images, np.float32))[:, None].to(self.device)
        with torch.inference_mode():
            return self.network(x).float().cpu().numpy()

    def foreground(self, images: NDArray[np.floating]) -> NDArray[np.float32]:
        """(N, rows, cols) foreground probability of a two-class segmenter (softmax)."""
        if len(images) == 0:
            return np.zeros((0, *np.shape(images)[1:]), np.float32)
        x = torch.as_tensor(np.asarray(images, np.float32))[:, None].to(self.device)
        with torch.inference_mode():
            return self.network(x).softmax(dim=1)[:, 1].float().cpu().numpy()

    def detect(self, region: NDArray[np.floating]) -> list[Detection]:
        """The detector's vertebrae in one normalised region image."""
        return read_detections(self.outputs(region))

    def probability(self, region: NDArray[np.floating]) -> NDArray[np.float32]:
        """The semantic UNet's body probability (rows, cols) in one region image."""
        logits = self.outputs(region)[0]
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
