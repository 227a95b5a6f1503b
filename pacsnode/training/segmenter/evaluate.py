"""The shape-aware paper's comparison, UNet against UNet-S, on held-out vertebra patches:
pixel accuracy, Dice, average point-to-curve error and fit failure (share of vertebrae
whose error exceeds 2 pixels), mean ± std and a paired t-test per metric.

Errors are in pixels of the phantom films as rendered for the patches (long side
``render_px``), measured from the outline of the predicted patch mask to the true outline,
both mapped to film pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pacsnode.analysis.networks import build_network
from pacsnode.analysis.weights import load_weights
from pacsnode.training.metrics import (
    confusion_counts,
    dice_coefficient,
    fit_failure,
    mask_to_curve_distance,
    paired_t_test,
    summary,
)
from pacsnode.training.segmenter.data import PatchSet
from pacsnode.training.segmenter.train import KIND

__all__ = ["FIT_FAILURE_PX", "LoadedSegmenter", "markdown_table", "score_segmenter"]

FIT_FAILURE_PX = 2.0
"""The paper's fit-failure threshold: a mean point-to-curve error above 2 pixels."""

METRICS = ("pixel_accuracy", "dice", "curve_error_px")


@dataclass(frozen=True)
class LoadedSegmenter:
    name: str
    network: torch.nn.Module
    manifest: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> LoadedSegmenter:
        path = path / f"{KIND}.safetensors" if path.is_dir() else path
        loaded = load_weights(path, kind=KIND)
        config = dict(loaded.manifest["network"])
        network = build_network(config.pop("arch"), **config)
        network.load_state_dict(loaded.tensors, strict=True)
        return cls(str(loaded.manifest.get("name", path.stem)), network.eval(), loaded.manifest)

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, size, size) boolean masks of normalised patches."""
        out = []
        for i in range(0, len(images), 256):
            x = torch.from_numpy(images[i : i + 256])[:, None]
            out.append(self.network(x).argmax(1).bool().numpy())
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:]), bool)


def score_segmenter(model: LoadedSegmenter, patches: PatchSet) -> dict[str, np.ndarray]:
    """Per-patch metrics: pixel accuracy, Dice, point-to-curve error in film pixels."""
    predicted = model.predict(patches.images)
    accuracy, dice, error = [], [], []
    for pred, truth, outline, scale in zip(
        predicted, patches.masks.astype(bool), patches.outlines, patches.scales, strict=True
    ):
        counts = confusion_counts(pred, truth)
        accuracy.append(counts.accuracy)
        dice.append(dice_coefficient(pred, truth))
        error.append(mask_to_curve_distance(pred, outline) * scale)
    return {
        "pixel_accuracy": np.asarray(accuracy),
        "dice": np.asarray(dice),
        "curve_error_px": np.asarray(error),
    }


def compare(scores: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Mean ± std per model and metric, fit failure, and paired t-tests of UNet-S against
    UNet when both are present."""
    table: dict[str, Any] = {"models": {}, "t_tests": {}}
    for name, per_patch in scores.items():
        row = {}
        for metric in METRICS:
            values = per_patch[metric]
            finite = values[np.isfinite(values)]
            s = summary(finite) if finite.size else None
            row[metric] = {
                "mean": None if s is None else s.mean,
                "std": None if s is None else s.std,
                "n": int(values.size),
                "missed": int((~np.isfinite(values)).sum()),
            }
        row["fit_failure"] = fit_failure(per_patch["curve_error_px"], FIT_FAILURE_PX)
        table["models"][name] = row
    if "unet" in scores and "unet-s" in scores:
        for metric in METRICS:
            a, b = scores["unet-s"][metric], scores["unet"][metric]
            both = np.isfinite(a) & np.isfinite(b)  # a missed vertebra has no curve error
            if both.sum() < 2:
                table["t_tests"][metric] = {"t": None, "p": None, "n": int(both.sum())}
                continue
            test = paired_t_test(a[both], b[both])
            table["t_tests"][metric] = {"t": test.t, "p": test.p_value, "n": int(both.sum())}
    return table


def markdown_table(table: Mapping[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        "| model | pixel accuracy | Dice | point-to-curve error (px) | fit failure (> 2 px) |",
        "|---|---|---|---|---|",
    ]
    for name, row in table["models"].items():
        cells = []
        for metric in METRICS:
            m = row[metric]
            scale = 100.0 if metric != "curve_error_px" else 1.0
            digits = 1 if metric != "curve_error_px" else 2
            cells.append(
                "n/a"
                if m["mean"] is None
                else f"{m['mean'] * scale:.{digits}f} ± {m['std'] * scale:.{digits}f}"
            )
        cells.append(f"{row['fit_failure'] * 100:.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if table.get("t_tests"):
        lines += ["", "Paired t-test, UNet-S against UNet, per patch:", ""]
        for metric, test in table["t_tests"].items():
            p, t = test["p"], test["t"]
            if t is None or p is None or math.isnan(p):
                lines.append(f"- {metric}: no test (n = {test['n']})")
            else:
                lines.append(f"- {metric}: t = {t:.2f}, p = {p:.2g} (n = {test['n']})")
    return "\n".join(lines) + "\n"
