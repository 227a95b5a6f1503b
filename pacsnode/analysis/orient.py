"""Which way a vertebra faces: a small classifier on a context patch around each detected
body says whether the patch's axis runs from the head to the tail (or the other way) and
on which side across it the patient's front is.

The localiser's box gives the spine's line but not its head end, and a lateral film may
show the patient facing either way; the detector's centres say where the bodies are.
This network gives the rest, from the anatomy: the skull base, the sacrum, the spinous
processes slanting down and back, the posterior elements behind each body.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from pacsnode.analysis.device import pick_device, place
from pacsnode.analysis.identify import identifier_frame
from pacsnode.analysis.networks.classifier import PatchClassifier
from pacsnode.analysis.patches import PatchFrame, normalise_patch
from pacsnode.analysis.weights import load_weights, model_version
from pacsnode.errors import ModelError

__all__ = ["CONTEXT", "KIND", "OUTPUTS", "Orienter", "orienter_frame"]

KIND = "orienter"

CONTEXT = 2.0
"""The orienter's patch covers this many times the segmenter's patch frame."""

OUTPUTS = ("head_first", "front_plus_u")
"""The two probabilities: the frame's axis points from the head to the tail; the
patient's front is towards the frame's +u."""


def orienter_frame(frame: PatchFrame, context: float = CONTEXT) -> PatchFrame:
    """The orienter's 64 x 64 patch frame around a segmenter frame."""
    return identifier_frame(frame, context)


class Orienter:
    """The trained orientation classifier."""

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        context: float = CONTEXT,
        manifest: dict[str, Any] | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        self.device = pick_device(device)
        self.network = place(network, self.device)
        self.context = float(context)
        self.manifest = manifest or {}

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device | None = "cpu") -> Orienter:
        """Load ``x.safetensors`` after checking it against ``x.json``, onto ``device``.

        Raises
        ------
        ModelError
            Missing, altered or foreign weights, or weights that do not fit the network.
        """
        loaded = load_weights(Path(path), kind=KIND)
        m = loaded.manifest
        try:
            net_cfg = dict(m["network"])
            if net_cfg.pop("arch") != "classifier":
                raise ValueError(f"network {m['network']} is not a patch classifier")
            network = PatchClassifier(classes=len(OUTPUTS), **net_cfg)
            network.load_state_dict(loaded.tensors, strict=True)
            return cls(network, context=float(m["input"]["context"]), manifest=m, device=device)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{loaded.path}: weights do not fit their manifest: {exc}") from exc

    @property
    def version(self) -> str:
        return model_version(self.manifest, KIND)

    def patches(
        self, image: NDArray[np.floating], frames: Sequence[PatchFrame]
    ) -> NDArray[np.float32]:
        """(N, 64, 64) normalised orienter patches of segmenter ``frames`` on ``image``."""
        out = np.zeros((len(frames), 64, 64), np.float32)
        for i, frame in enumerate(frames):
            out[i] = normalise_patch(orienter_frame(frame, self.context).extract(image))
        return out

    def probabilities(
        self, image: NDArray[np.floating], frames: Sequence[PatchFrame]
    ) -> NDArray[np.float32]:
        """(N, 2) probabilities of :data:`OUTPUTS` for segmenter-style frames on ``image``."""
        if not frames:
            return np.zeros((0, len(OUTPUTS)), np.float32)
        x = torch.from_numpy(self.patches(image, frames))[:, None].to(self.device)
        with torch.inference_mode():
            return torch.sigmoid(self.network(x)).float().cpu().numpy()
