"""Training loop of the localiser: RMSprop on low-resolution films with the paper's rotation
augmentation (5 to 355 degrees in 5-degree steps), log loss with or without the region-aware
term, resumable checkpoints, and a shippable safetensors file with its manifest at the end.

Checkpoints are safetensors plus JSON too, so nothing in a training folder needs pickle.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pacsnode.analysis.localise import KIND, pick_device
from pacsnode.analysis.networks import PAPER_SIZES, build_network, parameter_count
from pacsnode.analysis.weights import MANIFEST_SCHEMA
from pacsnode.training.augment import augment_appearance
from pacsnode.training.checkpoints import save_weights, seed_run, start_run
from pacsnode.training.localiser.data import DataError, LowresSet
from pacsnode.training.loop import EpochLoop, run_epochs
from pacsnode.training.losses import RegionAwareLoss
from pacsnode.training.metrics import ConfusionCounts

__all__ = ["TrainConfig", "TrainResult", "augment", "train_localiser"]

INPUT_MEAN, INPUT_STD = 0.5, 0.25
ANGLES_DEG = torch.arange(0, 360, 5, dtype=torch.float32)  # 0 (the film itself) and 5..355


@dataclass
class TrainConfig:
    """Everything that decides a training run; written into the checkpoint and manifest."""

    arch: str
    region_aware: bool
    out: Path
    region_weight: float = 1.0
    width: int | None = None
    depth: int | None = None
    size: int = 100
    epochs: int = 30
    batch_size: int = 10
    lr: float = 2e-3
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def network_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"arch": self.arch, **PAPER_SIZES[self.arch]}
        if self.width is not None:
            cfg["width"] = self.width
        if self.depth is not None and self.arch == "unet":
            cfg["depth"] = self.depth
        return cfg

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass(frozen=True)
class TrainResult:
    weights: Path
    manifest: Path
    best_epoch: int
    best_val_dice: float
    seconds: float


def augment(
    images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotation from the paper's set (0, 5, ..., 355 degrees) about the frame centre,
    with a mild zoom (0.85-1.15), shift (up to 8 % of the side) and left-right mirror, then
    gamma, gain and noise on the film; padding stays zero. (B, S, S) in, (B, S, S) out."""
    b = images.shape[0]
    u = torch.rand(b, 6, generator=gen)
    angle = torch.deg2rad(ANGLES_DEG[torch.randint(0, len(ANGLES_DEG), (b,), generator=gen)])
    zoom = 0.85 + 0.3 * u[:, 0]
    flip = torch.where(u[:, 1] < 0.5, -1.0, 1.0)
    shift = (u[:, 2:4] - 0.5) * 0.16
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, 1, *images.shape[1:]], align_corners=False)
    x = F.grid_sample(images[:, None], grid, mode="bilinear", align_corners=False)[:, 0]
    y = F.grid_sample(masks[:, None].float(), grid, mode="bilinear", align_corners=False)[:, 0]
    gamma = torch.exp((u[:, 4] - 0.5) * 0.8)[:, None, None]
    gain = (0.8 + 0.4 * u[:, 5])[:, None, None]
    x = x.clamp(0.0, 1.0).pow(gamma) * gain
    noise = torch.randn(x.shape, generator=gen) * 0.02 * torch.rand(b, 1, 1, generator=gen)
    x = torch.where(x > 0, x + noise, x).clamp(0.0, 1.0)
    return x, y >= 0.5


def _lr(cfg: TrainConfig, progress: float) -> float:
    """Cosine decay from ``lr`` to 5 % of it over the run."""
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return ((x - INPUT_MEAN) / INPUT_STD)[:, None]


def _val_dice(net: torch.nn.Module, val: LowresSet, device: torch.device) -> float:
    """Mean per-film Dice of the raw thresholded prediction on the validation films."""
    net.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(val), 20):
            x = _normalise(torch.from_numpy(val.images[i : i + 20])).to(device)
            pred = net(x).argmax(dim=1).cpu().numpy().astype(bool)
            for p, t in zip(pred, val.masks[i : i + 20], strict=True):
                scores.append(ConfusionCounts.from_masks(p, t).dice)
    net.train()
    return float(np.mean(scores))


def train_localiser(
    cfg: TrainConfig,
    train: LowresSet,
    val: LowresSet,
    *,
    resume: bool = False,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train one localiser variant and write ``localiser.safetensors`` and its manifest
    (``localiser.json``) into ``cfg.out``: the weights of the epoch with the best validation
    Dice. ``progress`` is a tqdm-like factory (``progress(total=, desc=)``)."""
    gen = seed_run(
        items="films",
        train=len(train),
        val=None,
        batch_size=cfg.batch_size,
        threads=cfg.threads,
        seed=cfg.seed,
    )
    device = pick_device(cfg.device)
    net_cfg = cfg.network_config()
    arch = net_cfg.pop("arch")
    net = build_network(arch, **net_cfg).to(device)
    opt = torch.optim.RMSprop(net.parameters(), lr=cfg.lr, alpha=0.9, eps=1e-6)
    loss_fn = RegionAwareLoss(cfg.region_weight if cfg.region_aware else 0.0)

    def same_variant(saved: dict[str, Any], ckpt: Path) -> None:
        if saved.get("arch") != cfg.arch or saved.get("region_aware") != cfg.region_aware:
            raise DataError(f"{ckpt} is a checkpoint of another variant: {saved}")

    fresh = {"epoch": 0, "history": [], "best_epoch": -1, "best_val_dice": -1.0}
    ckpt, state, best = start_run(
        cfg.out, net, opt, gen, resume=resume, fresh=fresh, check=same_variant, log=log
    )

    def set_lr(progress_fraction: float) -> None:
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, progress_fraction)

    def batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = augment(x, y, gen)
        x = augment_appearance(x, gen)[0].clamp(0.0, 1.0)
        return _normalise(x).to(device), y.to(device)

    loop = EpochLoop(
        extra="region",
        extra_weight=loss_fn.region_weight,
        batch=batch,
        terms=lambda x, y: loss_fn.terms(net(x), y),
        validate=lambda: _val_dice(net, val, device),
        set_lr=set_lr,
        extra_digits=5,
    )
    best, seconds = run_epochs(
        loop,
        net=net,
        opt=opt,
        gen=gen,
        images=torch.from_numpy(train.images),
        masks=torch.from_numpy(train.masks),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        checkpoint=ckpt,
        state=state,
        best=best,
        config=cfg.as_json(),
        progress=progress,
        log=log,
    )

    weights = cfg.out / f"{KIND}.safetensors"
    files = save_weights(weights, best)
    net_cfg_full = cfg.network_config()
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": KIND,
        "name": f"{arch}{'-r' if cfg.region_aware else ''}",
        **files,
        "network": net_cfg_full,
        "parameters": parameter_count(net),
        "input": {
            "size": cfg.size,
            "mean": INPUT_MEAN,
            "std": INPUT_STD,
            "frame": "centred zero pad to a square, antialiased bicubic resize",
        },
        "threshold": 0.5,
        "training": {
            "command": cfg.command,
            "loss": "log loss + region-aware term (Eq. 6)" if cfg.region_aware else "log loss",
            "region_weight": cfg.region_weight if cfg.region_aware else 0.0,
            "optimiser": "RMSprop",
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "data": cfg.data,
            "best_epoch": state["best_epoch"],
            "best_val_dice": state["best_val_dice"],
            "seconds": round(seconds, 1),
            "device": str(device),
            "torch": torch.__version__,
            "host": f"{platform.machine()} {torch.get_num_threads()} threads",
            "history": state["history"],
        },
        "evaluation": {},
    }
    mpath = weights.with_suffix(".json")
    mpath.write_text(json.dumps(manifest, indent=1))
    return TrainResult(weights, mpath, state["best_epoch"], state["best_val_dice"], seconds)
