"""The localisation paper's shallow FCN: six 3x3 convolutions, two 2x2 poolings, and one
deconvolution that upsamples the quarter-resolution map straight back to the input size.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShallowFCN"]


def _conv(cin: int, cout: int) -> nn.Sequential:
    # Batch normalisation is not in the paper; without it the net sat on the all-background
    # answer for thousands of steps on CPU, with it it learns in the first epoch.
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ShallowFCN(nn.Module):
    """Six convolutions (64, 64 | 128, 128 | 256, 256 channels, each batch-normalised),
    pooling after the second and fourth, and a stride-4 transposed convolution to two class
    maps.

    Input sides must be multiples of 4 (100 x 100 in the paper).
    """

    def __init__(self, in_channels: int = 1, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(in_channels, w),
            _conv(w, w),
            nn.MaxPool2d(2),
            _conv(w, 2 * w),
            _conv(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv(2 * w, 4 * w),
            _conv(4 * w, 4 * w),
        )
        self.upsample = nn.ConvTranspose2d(4 * w, classes, kernel_size=8, stride=4, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.features(x))
