"""Training checkpoints without pickle: the model, the best weights so far, the optimiser
state and the sampling generator as safetensors, the rest as JSON beside them.

A run interrupted at any point resumes to bit-identical weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["load_checkpoint", "save_checkpoint", "save_weights", "seed_run", "start_run"]


def save_checkpoint(
    path: Path,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    best: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Write ``path`` (safetensors) and ``path.json`` (``state`` and the optimiser's
    parameter groups), each by an atomic rename."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in best.items()})
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng"] = gen.get_state()
    state = {**state, "param_groups": opt_state["param_groups"]}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    jtmp = path.with_suffix(".json.tmp")
    jtmp.write_text(json.dumps(state, indent=1))
    jtmp.replace(path.with_suffix(".json"))


def load_checkpoint(
    path: Path,
    state: dict[str, Any],
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Restore ``path``'s tensors (``state`` is its JSON, already read); returns the best
    weights so far."""
    tensors = load_file(str(path))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    opt_state: dict[str, Any] = {"state": {}, "param_groups": state.pop("param_groups")}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            opt_state["state"].setdefault(int(idx), {})[name] = value
    opt.load_state_dict(opt_state)
    gen.set_state(tensors["rng"])
    return best


def seed_run(
    *,
    items: str,
    train: int,
    val: int | None,
    batch_size: int,
    threads: int | None,
    seed: int,
) -> torch.Generator:
    """Refuse training ``items`` (patches, films…) fewer than one batch, and an empty
    validation set (``val`` None: not checked); set torch's threads (when given) and
    seed; return the sampling generator, seeded alike.

    Raises
    ------
    DataError
        Too little data.
    """
    from pacsnode.training.localiser.data import DataError

    if train < batch_size:
        raise DataError(f"{train} training {items}, fewer than one batch of {batch_size}")
    if val == 0:
        raise DataError(f"no validation {items}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start_run(
    out: Path,
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    *,
    resume: bool,
    fresh: dict[str, Any],
    check: Callable[[dict[str, Any], Path], None] | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """The run folder's checkpoint path, the run's state and its best weights so far:
    ``fresh`` and none for a new run, or restored from the checkpoint with ``resume``
    (after ``check(saved config, checkpoint)`` has refused a checkpoint of another run).

    Raises
    ------
    DataError
        ``resume`` without a checkpoint (or whatever ``check`` raises).
    """
    from pacsnode.training.localiser.data import DataError

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.safetensors"
    if not resume:
        return ckpt, fresh, {}
    if not ckpt.exists():
        raise DataError(f"nothing to resume: {ckpt} does not exist")
    state = json.loads(ckpt.with_suffix(".json").read_text())
    if check is not None:
        check(state.get("config", {}), ckpt)
    best = load_checkpoint(ckpt, state, net, opt, gen)
    log(f"resuming {out} after epoch {state['epoch']}")
    return ckpt, state, best


def save_weights(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Write the weights to ``path`` (safetensors) and return the manifest's file fields:
    name, sha256 and size."""
    from pacsnode.analysis.weights import file_sha256

    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size}
