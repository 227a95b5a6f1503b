"""The thoracic UNet paper's loss: Dice loss plus binary cross-entropy, summed.

Dice loss is 1 - soft Dice, with the network's foreground probability in place of the
predicted mask: 1 - 2 sum(p y) / (sum p + sum y). It is computed per image and averaged,
so a film with a small spine counts as much as one with a large spine; ``smooth`` keeps an
empty truth with an empty prediction at loss 0 instead of 0/0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiceBCELoss", "soft_dice"]


def soft_dice(probability: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-image soft Dice of (B, H, W) foreground probabilities against 0/1 targets."""
    p = probability.flatten(1)
    y = target.flatten(1).to(p.dtype)
    return (2 * (p * y).sum(1) + smooth) / (p.sum(1) + y.sum(1) + smooth)


class DiceBCELoss(nn.Module):
    """L = (1 - Dice) + BCE for (B, 1, H, W) or (B, H, W) foreground logits.

    Parameters
    ----------
    smooth
        Added to the Dice numerator and denominator.
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0, got {smooth}")
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = self.terms(logits, target)
        return parts["dice"] + parts["bce"]

    def terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both terms separately: {"dice": 1 - mean Dice, "bce": mean BCE}."""
        if logits.ndim == 4:
            if logits.shape[1] != 1:
                raise ValueError(f"logits must have one channel, got {tuple(logits.shape)}")
            logits = logits[:, 0]
        if logits.shape != target.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ"
            )
        target = target.to(logits.dtype)
        dice = soft_dice(torch.sigmoid(logits), target, self.smooth).mean()
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return {"dice": 1 - dice, "bce": bce}
