"""The epoch loop every network of the stack trains with: shuffled batches, a two-term loss
(log loss plus the paper's extra term), a validation Dice after each epoch, the best
epoch's weights kept, and a checkpoint written after every epoch so a run resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pacsnode.training.checkpoints import save_checkpoint

__all__ = ["EpochLoop", "run_epochs"]

Batch = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Terms = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class EpochLoop:
    """What differs between the networks' training runs.

    Attributes
    ----------
    extra
        Name of the loss's second term ("region", "shape"): its key in ``terms``' result,
        in the history (``<extra>_loss``) and in the log line.
    extra_weight
        Its weight in the loss; the log loss has weight 1.
    batch
        Turns one batch of stored images and masks into network input and target
        (augmentation, normalisation, device), drawing randomness from the run's generator.
    terms
        The loss terms of a batch: ``{"log": ..., extra: ...}``.
    validate
        Validation Dice of the network as it stands.
    set_lr
        Called before each step with the run's progress in [0, 1), for a schedule.
    extra_digits
        Decimals of the extra term in the log line.
    score
        Name of what ``validate`` measures, for the log line (higher is better).
    """

    extra: str
    extra_weight: float
    batch: Batch
    terms: Terms
    validate: Callable[[], float]
    set_lr: Callable[[float], None] | None = None
    extra_digits: int = 4
    score: str = "Dice"


def run_epochs(
    loop: EpochLoop,
    *,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    images: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int,
    epochs: int,
    checkpoint: Path,
    state: dict[str, Any],
    best: dict[str, torch.Tensor],
    config: dict[str, Any],
    progress: Callable[..., Any] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, torch.Tensor], float]:
    """Train from ``state["epoch"]`` up to ``epochs``; returns the best weights and the
    training seconds so far. ``state`` (epoch, history, best epoch and Dice, seconds) is
    updated in place and written with every checkpoint, with ``config``."""
    seconds = float(state.get("seconds", 0.0))
    steps = len(images) // batch_size
    total_steps = steps * epochs
    extra = loop.extra
    net.train()
    for epoch in range(state["epoch"], epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(images), generator=gen)
        sums = {"log": 0.0, extra: 0.0}
        bar = progress(total=steps, desc=f"epoch {epoch + 1}/{epochs}") if progress else None
        for s in range(steps):
            if loop.set_lr is not None:
                loop.set_lr((epoch * steps + s) / total_steps)
            idx = order[s * batch_size : (s + 1) * batch_size]
            x, y = loop.batch(images[idx], masks[idx])
            terms = loop.terms(x, y)
            loss = terms["log"] + loop.extra_weight * terms[extra]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for key in sums:
                sums[key] += float(terms[key].detach())
            if bar is not None:
                bar.update(1)
                bar.set_postfix({key: f"{value / (s + 1):.4f}" for key, value in sums.items()})
        if bar is not None:
            bar.close()
        dice = loop.validate()
        seconds += time.perf_counter() - t0
        entry = {
            "epoch": epoch + 1,
            "log_loss": sums["log"] / steps,
            f"{extra}_loss": sums[extra] / steps,
            "val_dice": dice,
            "seconds": round(seconds, 1),
        }
        state["history"].append(entry)
        if dice > state["best_val_dice"]:
            state["best_val_dice"], state["best_epoch"] = dice, epoch + 1
            best = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        state["epoch"] = epoch + 1
        state["seconds"] = seconds
        state["config"] = config
        save_checkpoint(checkpoint, net, opt, gen, best, state)
        log(
            f"epoch {epoch + 1}/{epochs}: log loss {entry['log_loss']:.4f}, {extra} "
            f"{entry[f'{extra}_loss']:.{loop.extra_digits}f}, validation {loop.score} {dice:.4f} "
            f"({seconds:.0f} s)"
        )
    return best, seconds
