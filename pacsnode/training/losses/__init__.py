"""Training losses of the papers (never imported by the serving path)."""

from pacsnode.training.losses.dice_bce import DiceBCELoss, soft_dice
from pacsnode.training.losses.region_aware import (
    RegionAwareLoss,
    region_weights,
    region_weights_batch,
)
from pacsnode.training.losses.shape_aware import (
    ShapeAwareLoss,
    curve_distance,
    shape_weights_batch,
)

__all__ = [
    "DiceBCELoss",
    "RegionAwareLoss",
    "ShapeAwareLoss",
    "curve_distance",
    "region_weights",
    "region_weights_batch",
    "shape_weights_batch",
    "soft_dice",
]
