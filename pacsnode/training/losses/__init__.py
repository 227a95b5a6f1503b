"""Training losses of the papers (never imported by the serving path)."""

from pacsnode.training.losses.region_aware import (
    RegionAwareLoss,
    region_weights,
    region_weights_batch,
)

__all__ = ["RegionAwareLoss", "region_weights", "region_weights_batch"]
