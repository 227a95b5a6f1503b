"""The shape-aware segmentation paper's loss: pixel-wise log loss (Eq. 2-3) plus the
shape-aware term Ls (Eq. 4), summed with equal weight (Eq. 5).

Eq. 4: Ls = -sum over i in Ω̂p of sum_j y_i^j E_i log P(y_i^j = 1 | x_i), where Ω̂p are the
pixels on which the prediction and the ground truth disagree and E_i = D(Ĉ, C_GT) is the
average point-to-curve Euclidean distance from the boundary pixels of the predicted mask
to the ground-truth outline. E_i is one number per image: every mismatched pixel gets the
same extra log-loss weight, larger the further the predicted outline strays. A prediction
scattered in small islands has a long outline far from the truth, so Ls also pushes the
network towards one connected mask, as the paper notes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn

from pacsnode.training.losses.region_aware import check_two_class

__all__ = ["ShapeAwareLoss", "boundary", "curve_distance", "shape_weights_batch"]

_FULL = np.ones((3, 3), bool)


def boundary(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask's boundary pixels: in the mask, with a pixel outside it among their eight
    neighbours (the image edge counts as outside)."""
    inner = ndimage.binary_erosion(mask, structure=_FULL, border_value=0)
    return mask & ~inner


def curve_distance(predicted: NDArray[np.bool_], truth: NDArray[np.bool_]) -> float:
    """D(Ĉ, C_GT): mean distance (pixels) from each boundary pixel of ``predicted`` to the
    nearest boundary pixel of ``truth``.

    An empty prediction has no outline to measure; it gets the image diagonal, the worst
    distance possible, so that predicting nothing is never the cheap way out. An empty
    truth (a patch without a vertebra) gives the same for any non-empty prediction, and 0
    when both are empty.
    """
    if predicted.shape != truth.shape or predicted.ndim != 2:
        raise ValueError(f"need two equal 2-D masks, got {predicted.shape} and {truth.shape}")
    worst = float(np.hypot(*predicted.shape))
    predicted_curve = boundary(predicted.astype(bool))
    truth_curve = boundary(truth.astype(bool))
    if not predicted_curve.any():
        return 0.0 if not truth_curve.any() else worst
    if not truth_curve.any():
        return worst
    to_truth = ndimage.distance_transform_edt(~truth_curve)
    return float(to_truth[predicted_curve].mean())


def shape_weights_batch(foreground: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """E_i for (B, H, W) predicted and true masks: the image's curve distance on pixels
    where the two disagree (Ω̂p), 0 elsewhere."""
    predicted = foreground.detach().cpu().numpy().astype(bool)
    truth = target.detach().cpu().numpy().astype(bool)
    weights = np.stack(
        [(p != t) * curve_distance(p, t) for p, t in zip(predicted, truth, strict=True)]
    ).astype(np.float32)
    return torch.from_numpy(weights).to(foreground.device)


class ShapeAwareLoss(nn.Module):
    """L = Lt + w * Ls for two-class score maps (Eq. 5 has w = 1).

    Both terms are per-image sums (Eq. 2, Eq. 4) averaged over the batch and divided by
    the pixel count, as :class:`~pacsnode.training.losses.RegionAwareLoss` does.

    Parameters
    ----------
    shape_weight
        w; 0 gives the plain log loss ("UNet" rather than "UNet-S").
    """

    def __init__(self, shape_weight: float = 1.0) -> None:
        super().__init__()
        if shape_weight < 0:
            raise ValueError(f"shape_weight must be >= 0, got {shape_weight}")
        self.shape_weight = shape_weight

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for (B, 2, H, W) class scores and (B, H, W) 0/1 targets."""
        parts = self.terms(scores, target)
        return parts["log"] + self.shape_weight * parts["shape"]

    def terms(self, scores: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both terms separately: {"log": Lt, "shape": Ls} (each a scalar tensor)."""
        target = check_two_class(scores, target)
        scale = scores.shape[0] * scores.shape[2] * scores.shape[3]
        per_pixel = F.cross_entropy(scores, target, reduction="none")  # -sum_j y log P
        log_loss = per_pixel.sum() / scale
        if self.shape_weight == 0:
            return {"log": log_loss, "shape": scores.new_zeros(())}
        foreground = scores[:, 1] > scores[:, 0]
        e = shape_weights_batch(foreground, target)
        return {"log": log_loss, "shape": (e * per_pixel).sum() / scale}
