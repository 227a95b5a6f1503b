"""A small CNN that classifies one square single-channel patch: stages of two 3x3
convolution + batch norm + ReLU layers with 2x2 max pooling between them, global average
pooling, and one linear layer to the class scores.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PatchClassifier"]


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PatchClassifier(nn.Module):
    """(batch, ``in_channels``, H, W) patches -> (batch, ``classes``) scores before the softmax.

    ``depth`` stages of ``width``, 2 ``width``, 4 ``width``… channels, pooled by 2 between
    stages, so H and W must be multiples of ``2 ** (depth - 1)``; the global average pool
    makes the output independent of the patch size beyond that. At width 12 and depth 4
    the network has 165,711 parameters (0.66 MB as float32) for 3 classes.
    """

    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 3,
        width: int = 12,
        depth: int = 4,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1 or classes < 2:
            raise ValueError(
                f"need depth >= 1, width >= 1 and classes >= 2, got {depth}, {width}, {classes}"
            )
        chans = [width * 2**i for i in range(depth)]
        self.stages = nn.ModuleList([_stage(in_channels, chans[0])])
        self.stages.extend(_stage(chans[i], chans[i + 1]) for i in range(depth - 1))
        self.pool = nn.MaxPool2d(2)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(chans[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pool(x)
            x = stage(x)
        return self.head(self.dropout(x.mean(dim=(2, 3))))
