"""Training of the two region networks on region samples (:mod:`.data`):

- the semantic UNet, body mask, with the thoracic paper's Dice + binary cross-entropy;
- the vertebra detector, a UNet with four outputs: centre heatmap (binary cross-entropy
  against Gaussian targets, weighted towards the centres), and near each centre the
  head-to-tail direction and the log body size (L1).

Both use the shared epoch loop; the best validation epoch is kept (Dice of the body mask,
F1 of the detected centres).
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

from pacsnode.analysis.detect import DETECTOR_KIND, SEMANTIC_KIND, read_detections
from pacsnode.analysis.networks import build_network, parameter_count
from pacsnode.analysis.region import REGION_ACROSS, REGION_ALONG
from pacsnode.analysis.weights import MANIFEST_SCHEMA
from pacsnode.training.augment import augment_appearance
from pacsnode.training.checkpoints import save_weights, seed_run, start_run
from pacsnode.training.localiser.data import DataError
from pacsnode.training.loop import EpochLoop, run_epochs
from pacsnode.training.losses import DiceBCELoss
from pacsnode.training.region.data import RegionSet

__all__ = ["MATCH_RADIUS", "RegionConfig", "detection_scores", "train_region_network"]

MATCH_RADIUS = 0.35
"""A detection finds a vertebra when its centre is within this fraction of the body's
extent from the true centre."""

FOCAL_ALPHA, FOCAL_BETA = 2.0, 4.0
"""CenterNet's focal loss exponents."""

SIZE_WEIGHT = 1.0
"""Weight of the size term against the heatmap's."""


@dataclass
class RegionConfig:
    """Everything that decides a region network run; written into checkpoint and manifest."""

    kind: str
    out: Path
    width: int = 12
    depth: int = 4
    epochs: int = 12
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (DETECTOR_KIND, SEMANTIC_KIND):
            raise ValueError(f"kind is {DETECTOR_KIND!r} or {SEMANTIC_KIND!r}, got {self.kind!r}")

    @property
    def classes(self) -> int:
        return 2 if self.kind == DETECTOR_KIND else 1

    def network_config(self) -> dict[str, Any]:
        return {
            "arch": "unet",
            "width": self.width,
            "depth": self.depth,
            "classes": self.classes,
        }

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror across the spine (a patient facing the other way) and vary contrast."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None, None], y.flip(-1), y)
    gain = torch.exp(torch.randn(x.shape[0], 1, 1, generator=gen) * 0.15)
    noise = torch.randn(x.shape, generator=gen) * 0.05
    x, moved = augment_appearance(x * gain + noise, gen, y)
    return x, y if moved is None else moved


HEAT_PRIOR = 0.01
"""Starting probability of the heatmap: centres are rare, so the net starts out saying
"no centre" instead of spending its first epochs unlearning a half everywhere."""

TYPICAL_EXTENT = 30.0
"""A body's extent in frame pixels, where the size output starts."""


def _start_detector_head(net: torch.nn.Module) -> None:
    head = net.head
    with torch.no_grad():
        head.bias[0] = math.log(HEAT_PRIOR / (1 - HEAT_PRIOR))
        head.bias[1] = math.log(TYPICAL_EXTENT)


def detector_terms(out: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"log": the heatmap's focal log loss, "size": L1 of the log body size near the
    centres}.

    The heatmap term is CenterNet's penalty-reduced focal loss: each centre's peak pixel
    (the Gaussian target's local maximum) is a positive, every other pixel a negative
    whose loss shrinks as its target nears a centre; the sum is divided by the number of
    centres, so a film with few vertebrae weighs as much as one with many."""
    heat = target[:, 1]
    p = torch.sigmoid(out[:, 0]).clamp(1e-4, 1 - 1e-4)
    peak = (heat >= F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]) & (heat > 0.5)
    positive = peak.to(out.dtype)
    pos = -(torch.log(p) * (1 - p) ** FOCAL_ALPHA * positive).sum()
    neg = -(torch.log(1 - p) * p**FOCAL_ALPHA * (1 - heat) ** FOCAL_BETA * (1 - positive)).sum()
    log = (pos + neg) / positive.sum().clamp(min=1.0)
    near = (heat > 0.3).to(out.dtype)
    size = ((out[:, 1] - target[:, 2]).abs() * near).sum() / near.sum().clamp(min=1.0)
    return {"log": log, "size": size}


def detection_scores(
    outputs: list[np.ndarray], data: RegionSet, indices: range | list[int]
) -> dict[str, float]:
    """Precision, recall and F1 of the detections, and the mean relative error of the
    size of the bodies found."""
    tp = fp = fn = 0
    size_errors: list[float] = []
    for out, i in zip(outputs, indices, strict=True):
        found = read_detections(out)
        truth = data.centres[i]
        radius = MATCH_RADIUS * data.extents[i]
        used = np.zeros(len(truth), bool)
        for d in found:
            if len(truth) == 0:
                fp += 1
                continue
            dist = np.hypot(*(truth - np.asarray(d.centre)).T)
            dist[used] = np.inf
            k = int(np.argmin(dist))
            if dist[k] <= radius[k]:
                used[k] = True
                tp += 1
                size_errors.append(abs(d.extent / data.extents[i][k] - 1.0))
            else:
                fp += 1
        fn += int((~used).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "size_error": float(np.mean(size_errors)) if size_errors else float("nan"),
    }


@torch.inference_mode()
def _outputs(net: torch.nn.Module, images: np.ndarray, device: torch.device) -> list[np.ndarray]:
    net.eval()
    outs = []
    for i in range(0, len(images), 16):
        x = torch.from_numpy(images[i : i + 16].astype(np.float32))[:, None].to(device)
        outs.extend(net(x).float().cpu().numpy())
    net.train()
    return outs


def train_region_network(
    cfg: RegionConfig,
    train: RegionSet,
    val: RegionSet,
    *,
    resume: bool = False,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the detector or the semantic UNet; returns the path of ``<kind>.safetensors``."""
    gen = seed_run(
        items="samples",
        train=len(train),
        val=len(val),
        batch_size=cfg.batch_size,
        threads=cfg.threads,
        seed=cfg.seed,
    )
    device = torch.device(cfg.device)
    net_cfg = cfg.network_config()
    net = build_network(net_cfg.pop("arch"), **net_cfg).to(device)
    if cfg.kind == DETECTOR_KIND:
        _start_detector_head(net)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def same_network(saved: dict[str, Any], ckpt: Path) -> None:
        if saved.get("kind") != cfg.kind:
            raise DataError(f"{ckpt} is a checkpoint of another network")

    fresh = {"epoch": 0, "history": [], "best_epoch": -1, "best_val_dice": -1.0}
    ckpt, state, best = start_run(
        cfg.out, net, opt, gen, resume=resume, fresh=fresh, check=same_network, log=log
    )

    def batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = _augment(x.float(), y.float(), gen)
        return x[:, None].to(device), y.to(device)

    if cfg.kind == SEMANTIC_KIND:
        dice_bce = DiceBCELoss()

        def terms(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            parts = dice_bce.terms(net(x), y[:, 0])
            return {"log": parts["bce"], "dice": parts["dice"]}

        def validate() -> float:
            outs = _outputs(net, val.images, device)
            dices = []
            for out, target in zip(outs, val.targets, strict=True):
                pred, truth = out[0] > 0, target[0] > 0.5
                total = pred.sum() + truth.sum()
                dices.append(1.0 if total == 0 else 2 * (pred & truth).sum() / total)
            return float(np.mean(dices))

        loop = EpochLoop(
            extra="dice", extra_weight=1.0, batch=batch, terms=terms, validate=validate
        )
    else:

        def validate() -> float:
            scores = detection_scores(_outputs(net, val.images, device), val, range(len(val)))
            log(
                "  validation detections: precision {precision:.3f}, recall {recall:.3f}, "
                "size error {size_error:.3f}".format(**scores)
            )
            return scores["f1"]

        loop = EpochLoop(
            extra="size",
            extra_weight=SIZE_WEIGHT,
            batch=batch,
            terms=lambda x, y: detector_terms(net(x), y),
            validate=validate,
            score="F1",
        )
    best, seconds = run_epochs(
        loop,
        net=net,
        opt=opt,
        gen=gen,
        images=torch.from_numpy(train.images),
        masks=torch.from_numpy(train.targets),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        checkpoint=ckpt,
        state=state,
        best=best,
        config=cfg.as_json(),
        progress=progress,
        log=log,
    )
    weights = cfg.out / f"{cfg.kind}.safetensors"
    files = save_weights(weights, best)
    loss = (
        "Dice loss + binary cross-entropy (thoracic UNet paper)"
        if cfg.kind == SEMANTIC_KIND
        else "centre heatmap focal loss (CenterNet) + L1 of the log body size near centres"
    )
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": cfg.kind,
        "name": cfg.kind,
        **files,
        "network": cfg.network_config(),
        "parameters": parameter_count(net),
        "input": {
            "rows": REGION_ALONG,
            "columns": REGION_ACROSS,
            "normalisation": "CLAHE, then zero mean and unit standard deviation per region",
            "frame": "the localised spine box plus margins, rows along the spine",
        },
        "outputs": (
            ["body logit"]
            if cfg.kind == SEMANTIC_KIND
            else ["centre heatmap logit", "log extent (px)"]
        ),
        "training": {
            "command": cfg.command,
            "loss": loss,
            "optimiser": "Adam",
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "data": cfg.data,
            "best_epoch": state["best_epoch"],
            "best_validation": state["best_val_dice"],
            "validation_score": "F1 of centres" if cfg.kind == DETECTOR_KIND else "Dice",
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
