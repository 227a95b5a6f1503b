"""Training of the orienter (:mod:`pacsnode.analysis.orient`): context patches of every
annotated vertebra, each drawn turned end over end half of the time, mirrored across the
spine half of the time, and labelled with which way its axis runs and on which side the
front is. Two binary cross-entropies (the front's only where the annotation says which
endplate end is anterior); the epoch with the best validation accuracy is kept.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from pacsnode.analysis.networks import parameter_count
from pacsnode.analysis.networks.classifier import PatchClassifier
from pacsnode.analysis.orient import CONTEXT, KIND, OUTPUTS, orienter_frame
from pacsnode.analysis.patches import normalise_patch
from pacsnode.analysis.weights import MANIFEST_SCHEMA
from pacsnode.training.annotations import AnnotatedFilm
from pacsnode.training.augment import augment_appearance
from pacsnode.training.checkpoints import save_checkpoint, save_weights, seed_run, start_run
from pacsnode.training.localiser.data import DataError
from pacsnode.training.region.data import FRONT_FIRST_SOURCES, vertebra_geometry
from pacsnode.training.segmenter.data import Jitter, annotated_frame

__all__ = ["OrienterConfig", "OrienterSet", "orienter_set", "score_orienter", "train_orienter"]


@dataclass
class OrienterSet:
    """Patches (N, 64, 64), head-first labels (N,), front labels (N,: 1 towards +u, 0
    towards -u, -1 unknown), and the case of each."""

    images: NDArray[np.float32]
    head_first: NDArray[np.float32]
    front: NDArray[np.float32]
    cases: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def orienter_set(
    films: Iterable[AnnotatedFilm],
    *,
    seed: int,
    jitter: Jitter | None = None,
    context: float = CONTEXT,
    progress: Callable[[int], None] | None = None,
) -> OrienterSet:
    """One patch per annotated vertebra, its frame jittered and turned at random."""
    from pacsnode.analysis.region import working_image

    rng = np.random.default_rng(seed)
    images, heads, fronts, cases = [], [], [], []
    for film in films:
        work, factor = working_image(film.image)
        known = film.source in FRONT_FIRST_SOURCES
        for vertebra, (_, centre, axis, extent) in zip(
            film.vertebrae, vertebra_geometry(film), strict=True
        ):
            frame = annotated_frame(centre / factor, axis, extent / factor, rng, jitter or Jitter())
            turned = bool(rng.random() < 0.5)
            if turned:
                frame = frame.turned()
            front = -1.0
            if known and vertebra.superior is not None:
                (ax, ay), (px, py) = vertebra.superior
                du = frame.to_patch(ax / factor, ay / factor)[0]
                du -= frame.to_patch(px / factor, py / factor)[0]
                front = 1.0 if du > 0 else 0.0
            images.append(normalise_patch(orienter_frame(frame, context).extract(work)))
            heads.append(0.0 if turned else 1.0)
            fronts.append(front)
            cases.append(film.case_id)
        if progress is not None:
            progress(1)
    if not images:
        raise DataError("no annotated vertebrae to orient")
    return OrienterSet(
        np.stack(images), np.asarray(heads, np.float32), np.asarray(fronts, np.float32), cases
    )


@dataclass
class OrienterConfig:
    """Everything that decides an orienter run; written into checkpoint and manifest."""

    out: Path
    width: int = 8
    depth: int = 4
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    threads: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    command: str = ""

    def network_config(self) -> dict[str, Any]:
        return {"arch": "classifier", "width": self.width, "depth": self.depth}

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _terms(logits: torch.Tensor, head: torch.Tensor, front: torch.Tensor) -> torch.Tensor:
    known = (front >= 0).to(logits.dtype)
    head_loss = F.binary_cross_entropy_with_logits(logits[:, 0], head)
    front_loss = F.binary_cross_entropy_with_logits(
        logits[:, 1], front.clamp(min=0.0), reduction="none"
    )
    return head_loss + (front_loss * known).sum() / known.sum().clamp(min=1.0)


@torch.inference_mode()
def score_orienter(net: torch.nn.Module, data: OrienterSet) -> dict[str, float]:
    """Accuracy of the head-first and front calls on ``data``."""
    net.eval()
    outs = []
    for i in range(0, len(data), 256):
        outs.append(net(torch.from_numpy(data.images[i : i + 256])[:, None]).numpy())
    net.train()
    logits = np.concatenate(outs)
    head = float(np.mean((logits[:, 0] > 0) == (data.head_first > 0.5)))
    known = data.front >= 0
    front = (
        float(np.mean((logits[known, 1] > 0) == (data.front[known] > 0.5)))
        if known.any()
        else float("nan")
    )
    return {"head_first": head, "front": front}


def train_orienter(
    cfg: OrienterConfig,
    train: OrienterSet,
    val: OrienterSet,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Train the orienter; returns the path of ``orienter.safetensors``."""
    gen = seed_run(
        items="patches",
        train=len(train),
        val=None,
        batch_size=cfg.batch_size,
        threads=cfg.threads,
        seed=cfg.seed,
    )
    net = PatchClassifier(
        classes=len(OUTPUTS), **{k: v for k, v in cfg.network_config().items() if k != "arch"}
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    fresh = {"epoch": 0, "history": [], "best_epoch": -1, "best_val": -1.0}
    ckpt, state, best = start_run(cfg.out, net, opt, gen, resume=resume, fresh=fresh, log=log)
    images = torch.from_numpy(train.images)
    heads = torch.from_numpy(train.head_first)
    fronts = torch.from_numpy(train.front)
    steps = len(train) // cfg.batch_size
    seconds = float(state.get("seconds", 0.0))
    net.train()
    for epoch in range(state["epoch"], cfg.epochs):
        started = time.perf_counter()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        for s in range(steps):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            x, front = images[idx], fronts[idx].clone()
            mirror = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(mirror[:, None, None], x.flip(-1), x)
            front = torch.where(mirror & (front >= 0), 1.0 - front, front)
            gain = torch.exp(torch.randn(len(idx), 1, 1, generator=gen) * 0.15)
            x = x * gain + torch.randn(x.shape, generator=gen) * 0.05
            x, _ = augment_appearance(x, gen)
            loss = _terms(net(x[:, None]), heads[idx], front)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        scores = score_orienter(net, val)
        accuracy = float(np.nanmean([scores["head_first"], scores["front"]]))
        seconds += time.perf_counter() - started
        state["history"].append(
            {"epoch": epoch + 1, "loss": total / steps, **scores, "seconds": round(seconds, 1)}
        )
        if accuracy > state["best_val"]:
            state["best_val"], state["best_epoch"] = accuracy, epoch + 1
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        state["epoch"], state["seconds"], state["config"] = epoch + 1, seconds, cfg.as_json()
        save_checkpoint(ckpt, net, opt, gen, best, state)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {total / steps:.4f}, validation head-first "
            f"{scores['head_first']:.3f}, front {scores['front']:.3f} ({seconds:.0f} s)"
        )
    weights = cfg.out / f"{KIND}.safetensors"
    files = save_weights(weights, best)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "kind": KIND,
        "name": KIND,
        **files,
        "network": cfg.network_config(),
        "parameters": parameter_count(net),
        "outputs": list(OUTPUTS),
        "input": {
            "size": 64,
            "context": CONTEXT,
            "normalisation": "per patch: zero mean, unit standard deviation",
            "frame": "the segmenter's frame of a vertebra, CONTEXT times as wide",
        },
        "training": {
            "command": cfg.command,
            "loss": "binary cross-entropy of head-first and of front (where annotated)",
            "optimiser": "Adam",
            "lr": cfg.lr,
            "batch_size": cfg.batch_size,
            "epochs": cfg.epochs,
            "seed": cfg.seed,
            "data": cfg.data,
            "best_epoch": state["best_epoch"],
            "best_validation_accuracy": state["best_val"],
            "seconds": round(seconds, 1),
            "torch": torch.__version__,
            "host": f"{platform.machine()} {torch.get_num_threads()} threads",
            "history": state["history"],
        },
        "evaluation": {},
    }
    weights.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    return weights
