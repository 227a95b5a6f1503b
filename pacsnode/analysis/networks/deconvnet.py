"""DeConvNet for localisation: a contracting path whose max-pooling switches drive a
mirrored expanding path of unpooling and (transposed) convolutions.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DeconvNet"]


def _block(cin: int, cout: int, transposed: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    return nn.Sequential(conv(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeconvNet(nn.Module):
    """Encoder 64-64 | 128-128 | 256-256-256 with two poolings; the decoder mirrors it with
    max-unpooling at the recorded switch positions. Input sides must be multiples of 4.
    """

    def __init__(self, in_channels: int = 1, classes: int = 2, width: int = 64) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(in_channels, w), _block(w, w))
        self.enc2 = nn.Sequential(_block(w, 2 * w), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w), _block(4 * w, 4 * w), _block(4 * w, 4 * w))
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.dec3 = nn.Sequential(
            _block(4 * w, 4 * w, True), _block(4 * w, 4 * w, True), _block(4 * w, 2 * w, True)
        )
        self.dec2 = nn.Sequential(_block(2 * w, 2 * w, True), _block(2 * w, w, True))
        self.dec1 = nn.Sequential(_block(w, w, True), nn.Conv2d(w, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        p1, i1 = self.pool(e1)
        e2 = self.enc2(p1)
        p2, i2 = self.pool(e2)
        d3 = self.dec3(self.enc3(p2))
        d2 = self.dec2(self.unpool(d3, i2, output_size=e2.shape))
        return self.dec1(self.unpool(d2, i1, output_size=e1.shape))
