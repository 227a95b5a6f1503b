"""Training of the patch segmenter: a UNet on 64 x 64 vertebra patches, with pixel-wise
log loss alone ("UNet") or with the shape-aware term ("UNet-S", Eq. 5 with equal weights).

Checkpoints every epoch (safetensors + JSON, resumable); the weights of the epoch with the
best validation Dice are written as ``segmenter.safetensors`` with their manifest.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pacsnode.analysis.networks import build_network, parameter_count
from pacsnode.analysis.weights import MANIFEST_SCHEMA
from pacsnode.training.augment import augment_appearance
from pacsnode.training.checkpoints import save_weights, seed_run, start_run
from pacsnode.training.localiser.data import DataError
from pacsnode.training.loop import EpochLoop, run_epochs
from pacsnode.training.losses import ShapeAwareLoss
from pacsnode.training.segmenter.data import PATCH_MARGIN, PatchSet

__all__ = ["KIND", "SegmenterConfig", "train_segmenter"]

KIND = "segmenter"


@dataclass
class SegmenterConfig:
    """Everything that decides a segmenter run; written into checkpoint and manifest."""

    shape_aware: bool
    out: Path
    shape_weight: float = 1.0
    width: int = 16
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def name(self) -> str:
        return "unet-s" if self.shape_aware else "unet"

    def network_config(self) -> dict[str, Any]:
        return {"arch": "unet", "width": self.width, "depth": 3}

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror across the spine axis (a patient facing the other way), and vary contrast."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    gain = torch.exp(torch.randn(x.shape[0], 1, 1, generator=gen) * 0.15)
    noise = torch.randn(x.shape, generator=gen) * 0.05
    x, moved = augment_appearance(x * gain + noise, gen, y)
    return x, y if moved is None else moved


@torch.inference_mode()
def _val_dice(net: torch.nn.Module, val: PatchSet, device: torch.device) -> float:
    net.eval()
    dices = []
    for i in range(0, len(val), 256):
        x = torch.from_numpy(val.images[i : i + 256])[:, None].to(device)
        pred = net(x).argmax(1).cpu().bool()
        truth = torch.from_numpy(val.masks[i : i + 256]).bool()
        inter = (pred & truth).sum((1, 2)).float()
        total = pred.sum((1, 2)).float() + truth.sum((1, 2)).float()
        dices.append(torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total)))
    net.train()
    return float(torch.cat(dices).mean())


def train_segmenter(
    cfg: SegmenterConfig,
    train: PatchSet,
    val: PatchSet,
    *,
    resume: bool = False,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train one segmenter variant; returns the path of ``segmenter.safetensors``."""
    gen = seed_run(
        items="patches",
        train=len(train),
        val=len(val),
        batch_size=cfg.batch_size,
        threads=cfg.threads,
        seed=cfg.seed,
    )
    device = torch.device(cfg.device)
    net_cfg = cfg.network_config()
    arch = net_cfg.pop("arch")
    net = build_network(arch, **net_cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = ShapeAwareLoss(cfg.shape_weight if cfg.shape_aware else 0.0)

    def same_variant(saved: dict[str, Any], ckpt: Path) -> None:
        if saved.get("shape_aware") != cfg.shape_aware:
            raise DataError(f"{ckpt} is a checkpoint of the other variant")

    fresh = {"epoch": 0, "history": [], "best_epoch": -1, "best_val_dice": -1.0}
    ckpt, state, best = start_run(
        cfg.out, net, opt, gen, resume=resume, fresh=fresh, check=same_variant, log=log
    )

    def batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _augment(x, y, gen)
        return x[:, None].to(device), y.to(device)

    loop = EpochLoop(
        extra="shape",
        extra_weight=loss_fn.shape_weight,
        batch=batch,
        terms=lambda x, y: loss_fn.terms(net(x), y),
        validate=lambda: _val_dice(net, val, device),
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
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": KIND,
        "name": cfg.name,
        **save_weights(weights, best),
        "network": cfg.network_config(),
        "parameters": parameter_count(net),
        "input": {
            "size": int(train.images.shape[-1]),
            "margin": PATCH_MARGIN,
            "normalisation": "per patch: zero mean, unit standard deviation",
            "frame": "centred on the body, v along the spine axis head to tail",
        },
        "training": {
            "command": cfg.command,
            "loss": "log loss + shape-aware term (Eq. 5)" if cfg.shape_aware else "log loss",
            "shape_weight": cfg.shape_weight if cfg.shape_aware else 0.0,
            "optimiser": "Adam",
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
    weights.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    return weights
