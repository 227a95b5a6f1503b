"""Non-physical appearance augmentation shared by every training loop: random intensity
curves and gamma, blur and sharpening, noise, elastic deformation, random erasing and JPEG
artefacts, so no network can lean on one renderer's grey levels or edges.

It works on a batch as the loops hold it, whatever its normalisation: each image is brought
to [0, 1], changed, and given back its own mean and standard deviation.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["AppearanceAugment", "augment_appearance"]


@dataclass(frozen=True)
class AppearanceAugment:
    """Probabilities and strengths of each change (per image)."""

    p_curve: float = 0.8
    p_filter: float = 0.5
    p_noise: float = 0.5
    p_elastic: float = 0.3
    p_erase: float = 0.2
    p_jpeg: float = 0.15
    max_noise: float = 0.06
    elastic_px: float = 0.04
    """Largest elastic displacement, as a share of the image side."""


def _rand(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen)


def _curve(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random monotone intensity curve (8 knots) composed with a random gamma."""
    b = x.shape[0]
    knots = 8
    steps = 0.3 + _rand(b * knots, gen).view(b, knots)
    curve = torch.cat([torch.zeros(b, 1), torch.cumsum(steps, 1)], 1)
    curve = curve / curve[:, -1:]
    pos = x.clamp(0, 1) * knots
    i0 = pos.floor().clamp(max=knots - 1).long()
    frac = pos - i0
    flat = i0.view(b, -1)
    lo = torch.gather(curve, 1, flat).view_as(x)
    hi = torch.gather(curve, 1, flat + 1).view_as(x)
    y = lo + frac * (hi - lo)
    gamma = torch.exp((_rand(b, gen) - 0.5) * 1.2).view(b, 1, 1, 1)
    return y.clamp(1e-6, 1) ** gamma


def _gaussian(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred by its own sigma (px), separable, reflect-padded."""
    radius = 4
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma[:, None].clamp(min=0.3) ** 2))
    k = k / k.sum(1, keepdim=True)
    b = x.shape[0]
    # Grouped convolution: one kernel per image.
    xs = x.view(1, b, *x.shape[2:])
    xs = F.pad(xs, (radius, radius, 0, 0), mode="reflect")
    xs = F.conv2d(xs, k.view(b, 1, 1, -1), groups=b)
    xs = F.pad(xs, (0, 0, radius, radius), mode="reflect")
    xs = F.conv2d(xs, k.view(b, 1, -1, 1), groups=b)
    return xs.view_as(x)


def _elastic_grid(b: int, h: int, w: int, strength: float, gen: torch.Generator) -> torch.Tensor:
    """A smooth random sampling grid (B, H, W, 2) in [-1, 1] coordinates."""
    coarse = (torch.rand(b, 2, 4, 4, generator=gen) * 2 - 1) * strength * 2
    flow = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    ys = torch.linspace(-1, 1, h)
    xs = torch.linspace(-1, 1, w)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy], -1)[None].expand(b, h, w, 2)
    return base + flow.permute(0, 2, 3, 1)


def _jpeg(img: torch.Tensor, quality: int) -> torch.Tensor:
    arr = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buf), np.float32) / 255.0)


def augment_appearance(
    x: torch.Tensor,
    gen: torch.Generator,
    y: torch.Tensor | None = None,
    cfg: AppearanceAugment = AppearanceAugment(),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Augment a batch of single-channel images.

    Parameters
    ----------
    x
        (B, H, W) or (B, 1, H, W) images, in any normalisation.
    gen
        The run's generator: the same run draws the same changes.
    y
        Optional spatial targets (B, H, W) or (B, C, H, W) of the same H and W: the elastic
        deformation moves them with the image (nearest neighbour, so labels stay labels).

    Returns
    -------
    The augmented images with each image's mean and standard deviation as before, and the
    targets (moved where the images were deformed).
    """
    squeeze = x.dim() == 3
    xi = (x[:, None] if squeeze else x).float().cpu()
    b, _, h, w = xi.shape
    mean = xi.mean((1, 2, 3), keepdim=True)
    std = xi.std((1, 2, 3), keepdim=True).clamp(min=1e-6)
    lo = xi.amin((1, 2, 3), keepdim=True)
    hi = xi.amax((1, 2, 3), keepdim=True)
    img = (xi - lo) / (hi - lo).clamp(min=1e-6)

    pick = _rand(b, gen) < cfg.p_curve
    if pick.any():
        img = torch.where(pick.view(b, 1, 1, 1), _curve(img, gen), img)
    pick = _rand(b, gen) < cfg.p_filter
    if pick.any():
        sigma = 0.5 + _rand(b, gen) * 1.5
        amount = _rand(b, gen) * 2.8 - 0.8  # below 0 blurs, above 0 sharpens
        blurred = _gaussian(img, sigma)
        filtered = img + amount.view(b, 1, 1, 1) * (img - blurred)
        img = torch.where(pick.view(b, 1, 1, 1), filtered.clamp(0, 1), img)
    pick = _rand(b, gen) < cfg.p_noise
    if pick.any():
        level = (_rand(b, gen) * cfg.max_noise).view(b, 1, 1, 1)
        noise = torch.randn(img.shape, generator=gen) * level * (0.3 + img).sqrt()
        img = torch.where(pick.view(b, 1, 1, 1), (img + noise).clamp(0, 1), img)
    pick = _rand(b, gen) < cfg.p_elastic
    if pick.any():
        grid = _elastic_grid(b, h, w, cfg.elastic_px, gen)
        moved = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=True)
        img = torch.where(pick.view(b, 1, 1, 1), moved, img)
        if y is not None:
            yi = y[:, None] if y.dim() == 3 else y
            ym = F.grid_sample(
                yi.float().cpu(), grid, mode="nearest", padding_mode="border", align_corners=True
            ).to(yi.dtype)
            ym = torch.where(pick.view(b, 1, 1, 1).to(yi.device), ym.to(yi.device), yi)
            y = ym[:, 0] if y.dim() == 3 else ym
    pick = _rand(b, gen) < cfg.p_erase
    for i in torch.nonzero(pick).flatten().tolist():
        eh = max(1, int(h * (0.1 + 0.25 * float(_rand(1, gen)))))
        ew = max(1, int(w * (0.1 + 0.25 * float(_rand(1, gen)))))
        r0 = int(float(_rand(1, gen)) * (h - eh + 1))
        c0 = int(float(_rand(1, gen)) * (w - ew + 1))
        img[i, :, r0 : r0 + eh, c0 : c0 + ew] = float(_rand(1, gen))
    pick = _rand(b, gen) < cfg.p_jpeg
    for i in torch.nonzero(pick).flatten().tolist():
        quality = 15 + int(float(_rand(1, gen)) * 60)
        img[i, 0] = _jpeg(img[i, 0], quality)

    out_mean = img.mean((1, 2, 3), keepdim=True)
    out_std = img.std((1, 2, 3), keepdim=True).clamp(min=1e-6)
    out = (img - out_mean) / out_std * std + mean
    out = out.to(x.dtype).to(x.device)
    return (out[:, 0] if squeeze else out), y
