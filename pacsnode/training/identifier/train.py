"""Training of the reference-vertebra identifier: a small CNN on identifier patches with a
class-balanced cross-entropy (C2 and S1 are a few per cent of the patches), Adam with a
cosine learning-rate decay, mirror and contrast augmentation.

A classifier does not fit the segmentation epoch loop (:mod:`pacsnode.training.loop`: log
loss plus an extra term, validation Dice), so the loop is here; checkpoints are the shared
ones, written every epoch, and a run resumes to the same weights. The weights of the epoch
with the best validation macro F1 are written as ``identifier.safetensors`` with their
manifest.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pacsnode.analysis.identify import CLASSES, CONTEXT, KIND
from pacsnode.analysis.networks import parameter_count
from pacsnode.analysis.networks.classifier import PatchClassifier
from pacsnode.analysis.patches import PATCH_MARGIN
from pacsnode.analysis.weights import MANIFEST_SCHEMA
from pacsnode.training.augment import augment_appearance
from pacsnode.training.checkpoints import save_checkpoint, save_weights, seed_run, start_run
from pacsnode.training.identifier.data import IdentifierSet
from pacsnode.training.identifier.evaluate import predict_probabilities, score_identifier
from pacsnode.training.localiser.data import DataError

__all__ = ["IdentifierConfig", "class_weights", "sample_weights", "train_identifier"]


@dataclass
class IdentifierConfig:
    """Everything that decides an identifier run; written into checkpoint and manifest."""

    out: Path
    context: float = CONTEXT
    width: int = 12
    depth: int = 4
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    neighbours: bool = False
    """C3 and L5 weigh as patches of C2 and S1 (:func:`sample_weights`)."""
    threads: int | None = None
    device: str = "cpu"
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    @property
    def name(self) -> str:
        return f"identifier-w{self.width}"

    def network_config(self) -> dict[str, Any]:
        return {
            "arch": "classifier",
            "width": self.width,
            "depth": self.depth,
            "dropout": self.dropout,
        }

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def sample_weights(
    labels: np.ndarray, past: np.ndarray, inside: np.ndarray | None = None
) -> torch.Tensor:
    """Per patch, its class's weight (:func:`class_weights`); a frame one vertebra past a
    reference (``past`` its class index, else -1) weighs as a patch of that reference,
    so the few frames that look most like C2 or S1 without being them are not lost in the
    thousands of other vertebrae. With ``inside`` (the same, for C3 and L5: see
    :attr:`IdentifierSet.inside`) those weigh as a patch of their reference too."""
    by_class = class_weights(labels)
    weights = by_class[torch.from_numpy(np.asarray(labels, np.int64))]
    for marked in (past, inside):
        if marked is None:
            continue
        like = torch.from_numpy(np.asarray(marked, np.int64))
        if like.shape != weights.shape:
            raise ValueError(f"{tuple(like.shape)} marks for {tuple(weights.shape)} patches")
        weights = torch.where(like >= 0, by_class[like.clamp(min=0)], weights)
    return weights


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Cross-entropy weights that give each class present the same total weight, scaled so
    the mean weight per patch is 1; a class with no patches gets weight 0."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(np.float64)
    present = counts > 0
    weights = np.zeros(len(CLASSES))
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror across the spine axis (a patient facing the other way; never along it, which
    would turn the patch upside down and change its class), and vary contrast and noise."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None], x.flip(-1), x)
    gain = torch.exp(torch.randn(x.shape[0], 1, 1, generator=gen) * 0.15)
    noise = torch.randn(x.shape, generator=gen) * 0.05
    x, _ = augment_appearance(x * gain + noise, gen)
    return x


def _validate(net: torch.nn.Module, val: IdentifierSet, device: torch.device) -> dict[str, Any]:
    scores = score_identifier(val, predict_probabilities(net, val.images, device))
    net.train()
    refs = scores["reference_accuracy_both_orientations"]
    return {
        "val_macro_f1": scores["report"]["macro_f1"],
        "val_balanced_accuracy": scores["report"]["balanced_accuracy"],
        "val_reference_accuracy": {k: v["accuracy"] for k, v in refs.items()},
        "val_confusion": scores["confusion"],
    }


def train_identifier(
    cfg: IdentifierConfig,
    train: IdentifierSet,
    val: IdentifierSet,
    *,
    resume: bool = False,
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the identifier; returns the path of ``identifier.safetensors``."""
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
    net_cfg.pop("arch")
    net = PatchClassifier(classes=len(CLASSES), **net_cfg).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weights = class_weights(train.labels)
    per_patch = sample_weights(train.labels, train.past, train.inside if cfg.neighbours else None)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")

    def same_patches(saved: dict[str, Any], ckpt: Path) -> None:
        # A checkpoint from before --neighbours was written without it: trained without.
        for key, before in (
            ("context", None),
            ("width", None),
            ("depth", None),
            ("neighbours", False),
        ):
            if saved.get(key, before) != getattr(cfg, key):
                raise DataError(
                    f"{ckpt} was trained with {key} {saved.get(key, before)}, "
                    f"not {getattr(cfg, key)}"
                )

    fresh = {"epoch": 0, "history": [], "best_epoch": -1, "best_score": -1.0}
    ckpt, state, best = start_run(
        cfg.out, net, opt, gen, resume=resume, fresh=fresh, check=same_patches, log=log
    )

    images = torch.from_numpy(train.images)
    labels = torch.from_numpy(train.labels)
    steps = len(images) // cfg.batch_size
    total_steps = steps * cfg.epochs
    seconds = float(state.get("seconds", 0.0))
    net.train()
    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.perf_counter()
        # Dropout draws from torch's global generator, which checkpoints do not hold:
        # seeded per epoch, a resumed run drops the same units as an uninterrupted one.
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=gen)
        loss_sum = 0.0
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}") if progress else None
        for s in range(steps):
            # Cosine decay to zero over the whole run: a function of the step alone, so a
            # run resumed with the same --epochs follows the same schedule.
            for group in opt.param_groups:
                group["lr"] = (
                    cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + s) / total_steps))
                )
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x = _augment(images[idx], gen)[:, None].to(device)
            w = per_patch[idx].to(device)
            loss = (loss_fn(net(x), labels[idx].to(device)) * w).sum() / w.sum()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix({"loss": f"{loss_sum / (s + 1):.4f}"})
        if bar is not None:
            bar.close()
        figures = _validate(net, val, device)
        seconds += time.perf_counter() - t0
        entry = {"epoch": epoch + 1, "loss": loss_sum / steps, **figures}
        entry["seconds"] = round(seconds, 1)
        state["history"].append(entry)
        score = figures["val_macro_f1"] or 0.0
        if score > state["best_score"]:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            best = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state["epoch"] = epoch + 1
        state["seconds"] = seconds
        state["config"] = cfg.as_json()
        save_checkpoint(ckpt, net, opt, gen, best, state)
        refs = figures["val_reference_accuracy"]
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}, validation macro F1 "
            f"{score:.4f}, balanced accuracy {figures['val_balanced_accuracy']:.4f}, reference "
            + ", ".join(f"{k} {v if v is None else round(v, 3)}" for k, v in refs.items())
            + f" ({seconds:.0f} s)"
        )

    best_entry = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    path = cfg.out / f"{KIND}.safetensors"
    files = save_weights(path, best)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": KIND,
        "name": cfg.name,
        **files,
        "classes": list(CLASSES),
        "network": cfg.network_config(),
        "parameters": parameter_count(net),
        "input": {
            "size": int(train.images.shape[-1]),
            "context": cfg.context,
            "margin": PATCH_MARGIN,
            "normalisation": "per patch: zero mean, unit standard deviation",
            "frame": (
                "the segmenter's frame (centred on the body, v along the spine axis head to "
                "tail) with its side times context"
            ),
        },
        "training": {
            "command": cfg.command,
            "loss": (
                "class-balanced cross-entropy; a frame past a reference weighs as a patch "
                "of that reference"
                + ("; so do C3 and L5, the vertebrae next to C2 and S1" if cfg.neighbours else "")
            ),
            "class_weights": dict(zip(CLASSES, weights.tolist(), strict=True)),
            "optimiser": "AdamW, cosine decay",
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "data": cfg.data,
            "selection": "best validation macro F1",
            "best_epoch": state["best_epoch"],
            "seconds": round(seconds, 1),
            "device": str(device),
            "torch": torch.__version__,
            "host": f"{platform.machine()} {torch.get_num_threads()} threads",
            "history": state["history"],
        },
        "metrics": {
            "validation": {k: v for k, v in best_entry.items() if k.startswith("val_")},
        },
        "evaluation": {},
    }
    path.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    return path
