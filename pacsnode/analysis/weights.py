"""Model weights as the node ships them: a safetensors file (no pickle) beside a JSON manifest
that names its sha256, architecture, training command, data and evaluation figures.

Loading checks the digest before a single tensor is used, so an altered or truncated file is
refused with a clear message instead of producing silently wrong results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacsnode.errors import ModelError

__all__ = [
    "DEFAULT_MODELS_DIR",
    "MANIFEST_SCHEMA",
    "LoadedWeights",
    "file_sha256",
    "load_weights",
    "manifest_path",
    "model_version",
]

MANIFEST_SCHEMA = "pacsnode-model-manifest/1"
# The weights committed with the code: <repository>/models, beside the package.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def model_version(manifest: dict[str, Any], default_name: str) -> str:
    """How results cite a model: its name and the first 12 hex digits of its weights'
    sha256 (new weights, new version)."""
    return f"{manifest.get('name', default_name)}-{str(manifest.get('sha256', ''))[:12]}"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(weights: Path) -> Path:
    """``models/x.safetensors`` -> ``models/x.json``."""
    return weights.with_suffix(".json")


@dataclass(frozen=True)
class LoadedWeights:
    """A verified state dict (tensor name -> torch tensor, on the CPU) and its manifest."""

    tensors: dict[str, Any]
    manifest: dict[str, Any]
    path: Path


def load_weights(path: Path, *, kind: str) -> LoadedWeights:
    """Load ``path`` after checking it against its manifest.

    Parameters
    ----------
    path
        The ``.safetensors`` file; its manifest is the ``.json`` beside it.
    kind
        What the caller expects (e.g. "localiser"); a manifest of another kind is refused.

    Raises
    ------
    ModelError
        If either file is missing or unreadable, the manifest is not one of ours or is of
        another kind, or the sha256 differs.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    mpath = manifest_path(path)
    if not path.is_file():
        raise ModelError(f"model weights {path} not found")
    if not mpath.is_file():
        raise ModelError(f"model manifest {mpath} not found (it must sit beside {path.name})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"model manifest {mpath} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ModelError(f"{mpath} is not a pacsnode model manifest ({MANIFEST_SCHEMA})")
    if manifest.get("kind") != kind:
        raise ModelError(f"{mpath} describes a {manifest.get('kind')!r} model, not a {kind!r}")
    actual = file_sha256(path)
    if actual != manifest.get("sha256"):
        raise ModelError(
            f"{path} does not match its manifest: sha256 {actual}, manifest says "
            f"{manifest.get('sha256')}; the file was altered or truncated"
        )
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file: {exc}") from exc
    return LoadedWeights(tensors, manifest, path)
