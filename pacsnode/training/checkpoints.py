"""Training checkpoints without pickle: the model, the best weights so far, the optimiser
state and the sampling generator as safetensors, the rest as JSON beside them.

A run interrupted at any point resumes to bit-identical weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["load_checkpoint", "save_checkpoint"]


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
