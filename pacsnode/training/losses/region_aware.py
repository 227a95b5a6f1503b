"""The localisation paper's loss: pixel-wise log loss (Eq. 2-3) plus the region-aware term
Lr (Eq. 4-5) that penalises every predicted region but the largest, summed as in Eq. 6.

Eq. 4 reads Lr = 1/2 sum_i sum_j y_i^j E_i P^2(y_i^j = 1 | x_i). E_i is non-zero only on
pixels of predicted foreground regions, so ``weighting="prediction"`` (the default) takes y
there as the prediction's one-hot: the term is 1/2 E_i P(foreground | x_i)^2 and its gradient
lowers the foreground probability of the disjoint regions, which is the stated purpose.
``weighting="truth"`` takes y as the ground truth, literally: on a false-positive island it
then pushes background probability down, i.e. grows the island; it is kept for ablation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from pacsnode.analysis.lowres import label_regions

__all__ = ["RegionAwareLoss", "check_two_class", "region_weights", "region_weights_batch"]


def check_two_class(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Check (B, 2, H, W) class scores against (B, H, W) targets; the targets as long.

    Raises
    ------
    ValueError
        Either shape is wrong.
    """
    if scores.ndim != 4 or scores.shape[1] != 2:
        raise ValueError(f"scores must be (B, 2, H, W), got {tuple(scores.shape)}")
    if target.shape != (scores.shape[0], *scores.shape[2:]):
        raise ValueError(
            f"target must be (B, H, W) = {(scores.shape[0], *scores.shape[2:])}, "
            f"got {tuple(target.shape)}"
        )
    return target.long()


def region_weights(
    prediction: NDArray[np.bool_], target_regions: int = 1, connectivity: int = 8
) -> NDArray[np.float64]:
    """Eq. 5: per-pixel weight E_i for one binary prediction mask.

    E_i = max(N_r - N_t, 0) * (A_max_t - A_q) / A_max_t for pixels i of every predicted
    region q smaller than A_max_t, the area of the N_t-th largest region; 0 elsewhere.

    Parameters
    ----------
    prediction
        (H, W) predicted foreground mask.
    target_regions
        N_t, the number of regions sought (1 for the spine).
    connectivity
        4 or 8: which neighbours join pixels into one region.
    """
    if prediction.ndim != 2:
        raise ValueError(f"prediction must be 2-D (H, W), got shape {prediction.shape}")
    labels, n_regions = label_regions(prediction, connectivity)
    weights = np.zeros(prediction.shape, dtype=np.float64)
    excess = max(n_regions - target_regions, 0)
    if excess == 0:
        return weights
    areas = np.bincount(labels.ravel())[1:].astype(np.float64)
    a_max = np.sort(areas)[::-1][target_regions - 1]
    per_region = np.where(areas < a_max, excess * (a_max - areas) / a_max, 0.0)
    weights[labels > 0] = per_region[labels[labels > 0] - 1]
    return weights


def region_weights_batch(
    foreground: torch.Tensor, target_regions: int = 1, connectivity: int = 8
) -> torch.Tensor:
    """E for a batch of (B, H, W) boolean foreground predictions, as a float tensor."""
    masks = foreground.detach().cpu().numpy().astype(bool)
    stack = np.stack([region_weights(m, target_regions, connectivity) for m in masks])
    return torch.from_numpy(stack).to(device=foreground.device, dtype=torch.float32)


class RegionAwareLoss(nn.Module):
    """L = Lt + w * Lr for two-class score maps (Eq. 6 has w = 1).

    Lt is the per-image sum of pixel-wise log loss (Eq. 2); both terms are averaged over the
    batch and divided by the pixel count so the learning rate does not depend on image size.

    Parameters
    ----------
    region_weight
        w; 0 gives the plain log loss ("FCN" rather than "FCN-R").
    weighting
        "prediction" or "truth": how Eq. 4's y is read (see the module docstring).
    """

    def __init__(
        self,
        region_weight: float = 1.0,
        *,
        target_regions: int = 1,
        connectivity: int = 8,
        weighting: str = "prediction",
    ) -> None:
        super().__init__()
        if weighting not in ("prediction", "truth"):
            raise ValueError(f"weighting must be 'prediction' or 'truth', got {weighting!r}")
        if region_weight < 0:
            raise ValueError(f"region_weight must be >= 0, got {region_weight}")
        self.region_weight = region_weight
        self.target_regions = target_regions
        self.connectivity = connectivity
        self.weighting = weighting

    def forward(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss for (B, 2, H, W) class scores and (B, H, W) 0/1 targets."""
        parts = self.terms(scores, target)
        return parts["log"] + self.region_weight * parts["region"]

    def terms(self, scores: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both terms separately: {"log": Lt, "region": Lr} (each a scalar tensor)."""
        target = check_two_class(scores, target)
        pixels = scores.shape[2] * scores.shape[3]
        log_loss = F.cross_entropy(scores, target, reduction="sum") / (scores.shape[0] * pixels)
        if self.region_weight == 0:
            return {"log": log_loss, "region": scores.new_zeros(())}
        prob = scores.softmax(dim=1)
        foreground = prob[:, 1] > prob[:, 0]
        e = region_weights_batch(foreground, self.target_regions, self.connectivity)
        if self.weighting == "prediction":
            p = prob[:, 1]  # pixels with E > 0 are predicted foreground
        else:
            p = prob.gather(1, target[:, None])[:, 0]
        region = 0.5 * (e * p.pow(2)).sum() / (scores.shape[0] * pixels)
        return {"log": log_loss, "region": region}
