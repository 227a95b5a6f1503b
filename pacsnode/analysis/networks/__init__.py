"""Segmentation networks of the papers, sized for the node's CPU budget.

Each takes a (batch, 1, H, W) float image and returns (batch, 2, H, W) class scores
(background, foreground) before the softmax, as Eq. 3 of the localisation paper uses them.
"""

from torch import nn

from pacsnode.analysis.networks.deconvnet import DeconvNet
from pacsnode.analysis.networks.fcn import ShallowFCN
from pacsnode.analysis.networks.unet import UNet

ARCHITECTURES = {"fcn": ShallowFCN, "deconvnet": DeconvNet, "unet": UNet}

# Widths that put each net near the localisation paper's parameter counts
# (FCN 1,199,042; DeConvNet 4,104,194; UNet 6,003,842): 1,177,922 / 4,152,892 / 5,906,342.
PAPER_SIZES: dict[str, dict[str, int]] = {
    "fcn": {"width": 64},
    "deconvnet": {"width": 70},
    "unet": {"width": 114, "depth": 2},
}

__all__ = [
    "ARCHITECTURES",
    "PAPER_SIZES",
    "DeconvNet",
    "ShallowFCN",
    "UNet",
    "build_network",
    "parameter_count",
]


def build_network(arch: str, **overrides: int) -> nn.Module:
    """Build ``arch`` ("fcn", "deconvnet" or "unet") at the paper's size, or as overridden."""
    try:
        cls = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; expected one of {list(ARCHITECTURES)}"
        ) from None
    return cls(**{**PAPER_SIZES[arch], **overrides})


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
