"""Where the stack's networks run: the device ``[analysis] device`` names, checked before
a single weight moves, and one way to put a loaded network there for inference.

Every network of the stack goes through :func:`place`, so one setting reaches all six.
"""

from __future__ import annotations

import re

import torch

from pacsnode.errors import ModelError

__all__ = ["pick_device", "place"]

_CUDA = re.compile(r"cuda(?::(\d+))?")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device for a device setting.

    ``None`` or ``"auto"`` is the first CUDA device when torch sees one, else the CPU (the
    documented fallback). ``"cuda"`` or ``"cuda:N"`` is that device and nothing else: a
    node told to use a GPU that it cannot see stops with a clear message instead of
    running, slowly and silently, on the CPU.

    Raises
    ------
    ModelError
        CUDA was asked for and this torch has no CUDA, sees no GPU, or has no device N.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    match = _CUDA.fullmatch(str(device)) if isinstance(device, str) else None
    if chosen.type == "cuda" or match:
        if torch.version.cuda is None:
            raise ModelError(
                f"[analysis] device = {str(device)!r}, but this torch ({torch.__version__}) "
                "is built without CUDA: install a CUDA build (deploy/install.sh --cuda), or "
                'set device = "auto" to use a GPU when there is one and the CPU otherwise'
            )
        if not torch.cuda.is_available():
            raise ModelError(
                f"[analysis] device = {str(device)!r}, but torch sees no CUDA device (check "
                "the driver with nvidia-smi, and that the service may open /dev/nvidia*; "
                'see docs/scaling-and-gpu.md), or set device = "auto"'
            )
        index = chosen.index or 0
        if index >= torch.cuda.device_count():
            raise ModelError(
                f"[analysis] device = {str(device)!r}, but torch sees "
                f"{torch.cuda.device_count()} CUDA device(s), numbered from 0"
            )
    return chosen


def place(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` on ``device``, in evaluation mode (no dropout, frozen batch norm)."""
    return network.to(device).eval()
