"""The identify stage: how likely each vertebra of a film is C2 (the dens rising from the
body, the skull base above), S1 (the sacral wedge, the pelvis below) or another vertebra,
from a patch around it that is wider than the segmenter's, so the neighbours show.

The classifier is orientation-sensitive on purpose: it was trained with C2 and S1 patches
turned 180 degrees as "other", so a frame whose axis runs tail to head does not score as
a reference vertebra, and the stack can tell head from tail with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray

from pacsnode.analysis.device import pick_device, place
from pacsnode.analysis.networks.classifier import PatchClassifier
from pacsnode.analysis.patches import PATCH_SIZE, PatchFrame, normalise_patch
from pacsnode.analysis.weights import load_weights, model_version
from pacsnode.errors import ModelError

REFERENCE_THRESHOLD = 0.5
"""Smallest reference probability for naming a chain, where the manifest sets none."""

__all__ = [
    "CLASSES",
    "CONTEXT",
    "KIND",
    "REFERENCE_THRESHOLD",
    "Identifier",
    "identifier_frame",
    "mirrored_logits",
]

KIND: Final = "identifier"

CLASSES: Final = ("other", "C2", "S1")
"""The identifier's classes, in the order of its outputs."""

CONTEXT: Final = 2.0
"""Side of the identifier's patch over the segmenter's patch side (same centre and axis).
The segmenter's patch is 1.6 body extents across; twice that shows about one vertebra
above and below, so the skull base over C2 and the sacrum and pelvis under S1. Chosen on
40 validation phantoms against 1.5 and 3.0 (150 training films, 12 epochs each): macro F1
0.76 against 0.72 and 0.63, and the only one that found every validation C2 and S1; wider,
the S1 patch is mostly pelvis and S1 is found on 7 of 12 lumbar films
(``runs/ship/identifier/context-study.json``)."""


def mirrored_logits(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The classifier's logits of (N, 1, size, size) patches averaged with those of their
    mirrors across the spine axis (the patient facing the other way, as training mirrors
    them): a call that holds only one way round counts for less."""
    return (network(x) + network(x.flip(-1))) / 2


def identifier_frame(
    frame: PatchFrame, context: float = CONTEXT, size: int = PATCH_SIZE
) -> PatchFrame:
    """The identifier's patch frame for a vertebra whose segmenter frame is ``frame``:
    the same centre and axis, ``context`` times the film extent, ``size`` pixels across."""
    if not context > 0:
        raise ValueError(f"context must be positive, got {context}")
    scale = frame.scale * frame.size * context / size
    return PatchFrame(frame.centre, frame.axis, scale, size)


class Identifier:
    """The trained reference-vertebra classifier and the patch geometry it was trained with.

    Parameters
    ----------
    network
        A :class:`PatchClassifier` with ``len(CLASSES)`` outputs.
    context
        The patch side over the segmenter frame's side (see :data:`CONTEXT`).
    size
        Patch side in pixels.
    manifest
        The weights' manifest, for names and versions in the results.
    device
        "cpu", "cuda[:N]" or "auto".
    """

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        context: float = CONTEXT,
        size: int = PATCH_SIZE,
        manifest: dict[str, Any] | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        self.device = pick_device(device)
        self.network = place(network, self.device)
        self.context = float(context)
        self.size = int(size)
        self.manifest = manifest or {}
        # Temperature scaling (Guo et al. 2017), fitted on validation films: the
        # probabilities the naming threshold is applied to.
        calibration = self.manifest.get("calibration", {})
        self.temperature = float(calibration.get("temperature", 1.0))
        self.threshold = float(calibration.get("threshold", REFERENCE_THRESHOLD))

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device | None = "cpu") -> Identifier:
        """Load ``x.safetensors`` after checking it against ``x.json``.

        Raises
        ------
        ModelError
            Missing, altered or foreign weights, or weights that do not fit the network
            or classes their manifest names.
        """
        loaded = load_weights(Path(path), kind=KIND)
        m = loaded.manifest
        try:
            if tuple(m["classes"]) != CLASSES:
                raise ValueError(f"classes {m['classes']} are not {list(CLASSES)}")
            net_cfg = dict(m["network"])
            if net_cfg.pop("arch") != "classifier":
                raise ValueError(f"network {m['network']} is not a patch classifier")
            network = PatchClassifier(classes=len(CLASSES), **net_cfg)
            network.load_state_dict(loaded.tensors, strict=True)
            inp = m["input"]
            return cls(
                network,
                context=float(inp["context"]),
                size=int(inp["size"]),
                manifest=m,
                device=device,
            )
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{loaded.path}: weights do not fit their manifest: {exc}") from exc

    @property
    def version(self) -> str:
        """Name and the first 12 hex digits of the weights' sha256, as results cite it."""
        return model_version(self.manifest, KIND)

    def frame(self, frame: PatchFrame) -> PatchFrame:
        """The identifier patch frame of a segmenter frame, at this model's context."""
        return identifier_frame(frame, self.context, self.size)

    def patches(
        self, film_image: NDArray[np.floating], frames: Sequence[PatchFrame]
    ) -> NDArray[np.float32]:
        """(N, size, size) normalised identifier patches of ``frames`` on the film."""
        if film_image.ndim != 2:
            raise ValueError(f"a film is 2-D (rows, cols), got shape {film_image.shape}")
        out = np.zeros((len(frames), self.size, self.size), np.float32)
        for i, frame in enumerate(frames):
            out[i] = normalise_patch(self.frame(frame).extract(film_image))
        return out

    def probabilities(
        self, film_image: NDArray[np.floating], frames: Sequence[PatchFrame]
    ) -> NDArray[np.float32]:
        """(N, 3) probabilities of :data:`CLASSES` for each vertebra frame: the softmax at
        the calibrated temperature of the logits averaged over the patch and its mirror
        across the spine axis.

        Parameters
        ----------
        film_image
            (rows, cols) film, bone bright, at whatever resolution the frames are in.
        frames
            Segmenter patch frames in that film's pixel (x, y) coordinates, axis from head
            to tail; a frame with its axis reversed is seen upside down.
        """
        if not frames:
            return np.zeros((0, len(CLASSES)), np.float32)
        x = torch.from_numpy(self.patches(film_image, frames))[:, None].to(self.device)
        with torch.inference_mode():
            prob = (mirrored_logits(self.network, x) / self.temperature).softmax(dim=1)
        return prob.float().cpu().numpy()
