"""Training and evaluation of the shape-aware vertebra patch segmenter (UNet vs UNet-S)."""

from pacsnode.training.segmenter.data import (
    DEFAULT_RENDER_PX,
    PATCH_MARGIN,
    Jitter,
    PatchSet,
    normalise_patch,
    phantom_patches,
    repeat_labels,
    vertebra_frame,
)

__all__ = [
    "DEFAULT_RENDER_PX",
    "PATCH_MARGIN",
    "Jitter",
    "PatchSet",
    "normalise_patch",
    "phantom_patches",
    "repeat_labels",
    "vertebra_frame",
]
