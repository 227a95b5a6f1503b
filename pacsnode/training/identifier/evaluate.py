"""Scores of the reference-vertebra identifier: the confusion matrix of its patches,
per-class precision and recall, macro F1 and balanced accuracy, and the figure naming
depends on, the reference accuracy: on each cervical film, is the vertebra with the highest
C2 probability the true C2; on each lumbar film, the highest S1 probability the true S1.

The reference accuracy is given twice: among the upright frames only, and among upright
and reversed frames together (the stack also looks at each vertebra upside down to tell
head from tail, so a reversed neighbour must not outscore the true reference either).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from pacsnode.analysis.identify import CLASSES, mirrored_logits
from pacsnode.training.identifier.data import IdentifierSet

__all__ = [
    "REFERENCE_REGION",
    "chest_false_references",
    "class_report",
    "confusion_matrix",
    "markdown_report",
    "predict_probabilities",
    "reference_accuracy",
    "score_identifier",
]

REFERENCE_REGION = {"C2": "cervical", "S1": "lumbar"}
"""The films on which each reference vertebra is shown, as the phantoms draw them."""


def confusion_matrix(truth: NDArray[np.integer], predicted: NDArray[np.integer]) -> NDArray:
    """(K, K) counts, rows the true class and columns the predicted, in :data:`CLASSES` order."""
    k = len(CLASSES)
    return np.bincount(np.asarray(truth) * k + np.asarray(predicted), minlength=k * k).reshape(k, k)


def class_report(matrix: NDArray[np.integer]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support; macro F1 and balanced accuracy (mean
    recall); accuracy. A class with no support or no predictions has ``None`` there."""
    m = np.asarray(matrix, np.float64)
    per_class: dict[str, dict[str, float | int | None]] = {}
    f1s, recalls = [], []
    for i, name in enumerate(CLASSES):
        tp, support, predicted = m[i, i], m[i].sum(), m[:, i].sum()
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        else:
            f1 = None
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(support),
        }
        if support:
            f1s.append(f1 or 0.0)
            recalls.append(recall)
    total = m.sum()
    return {
        "classes": per_class,
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "accuracy": float(np.trace(m) / total) if total else None,
    }


def reference_accuracy(
    patches: IdentifierSet, probabilities: NDArray[np.floating], *, both_orientations: bool
) -> dict[str, dict[str, Any]]:
    """Per reference ("C2", "S1"): on the films of its region that show it wholly, the share
    whose highest probability for it is at its own upright patch.

    Returns ``{"C2": {"films": n, "correct": k, "accuracy": k / n or None, "wrong":
    [(case id, label chosen, reversed), ...]}, "S1": ...}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, region in REFERENCE_REGION.items():
        c = CLASSES.index(name)
        films = correct = 0
        wrong: list[tuple[str, str, bool]] = []
        for film in np.unique(patches.films):
            if patches.regions[film] != region:
                continue
            here = patches.films == film
            if not both_orientations:
                here &= ~patches.reversed
            idx = np.nonzero(here)[0]
            is_ref = patches.labels[idx] == c
            if not is_ref.any():  # the reference is cut by the film's edge: no question
                continue
            films += 1
            pick = idx[int(np.argmax(probabilities[idx, c]))]
            if patches.labels[pick] == c:
                correct += 1
            else:
                case, label = patches.cases[pick]
                wrong.append((case, label, bool(patches.reversed[pick])))
        out[name] = {
            "films": films,
            "correct": correct,
            "accuracy": correct / films if films else None,
            "wrong": wrong,
        }
    return out


def chest_false_references(
    patches: IdentifierSet, probabilities: NDArray[np.floating]
) -> dict[str, Any]:
    """Chest films (neither reference shown) on which some upright patch is classed C2 or S1."""
    predicted = np.argmax(probabilities, axis=1)
    films = flagged = 0
    for film in np.unique(patches.films):
        if patches.regions[film] != "chest":
            continue
        films += 1
        here = (patches.films == film) & ~patches.reversed
        flagged += bool((predicted[here] != CLASSES.index("other")).any())
    return {"films": films, "flagged": flagged, "rate": flagged / films if films else None}


@torch.inference_mode()
def predict_probabilities(
    network: torch.nn.Module, images: NDArray[np.float32], device: torch.device | str = "cpu"
) -> NDArray[np.float32]:
    """(N, 3) class probabilities of (N, size, size) normalised patches, in batches, as
    the stack computes them (:func:`~pacsnode.analysis.identify.mirrored_logits`, at
    temperature 1); the network is put in eval mode."""
    network.eval()
    out = [np.zeros((0, len(CLASSES)), np.float32)]
    for i in range(0, len(images), 256):
        x = torch.from_numpy(images[i : i + 256])[:, None].to(device)
        with torch.inference_mode():
            out.append(mirrored_logits(network, x).softmax(dim=1).float().cpu().numpy())
    return np.concatenate(out)


def score_identifier(patches: IdentifierSet, probabilities: NDArray[np.floating]) -> dict[str, Any]:
    """All figures of a set's probabilities (N, 3): the confusion matrices (all patches,
    upright, reversed), the class report, the reference accuracies, the chest false
    references."""
    probabilities = np.asarray(probabilities)
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(patches.labels, predicted)
    up, down = ~patches.reversed, patches.reversed
    refs = reference_accuracy(patches, probabilities, both_orientations=False)
    refs_both = reference_accuracy(patches, probabilities, both_orientations=True)
    # How the references look upside down: what the reversed C2 and S1 patches are called.
    reversed_refs = {}
    for name in ("C2", "S1"):
        rows = [i for i in np.nonzero(down)[0] if patches.cases[i][1] == name]
        reversed_refs[name] = {
            "patches": len(rows),
            "called": {cls: int((predicted[rows] == j).sum()) for j, cls in enumerate(CLASSES)},
        }
    return {
        "classes": list(CLASSES),
        "patches": len(patches),
        "films": len(patches.regions),
        "regions": {r: patches.regions.count(r) for r in sorted(set(patches.regions))},
        "confusion": matrix.tolist(),
        "confusion_upright": confusion_matrix(patches.labels[up], predicted[up]).tolist(),
        "confusion_reversed": confusion_matrix(patches.labels[down], predicted[down]).tolist(),
        "report": class_report(matrix),
        "reference_accuracy": refs,
        "reference_accuracy_both_orientations": refs_both,
        "reversed_references": reversed_refs,
        "chest_false_references": chest_false_references(patches, probabilities),
    }


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _matrix_lines(matrix: list[list[int]]) -> list[str]:
    lines = ["| true \\ predicted | " + " | ".join(CLASSES) + " |"]
    lines.append("|---" * (len(CLASSES) + 1) + "|")
    for name, row in zip(CLASSES, matrix, strict=True):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def markdown_report(scores: Mapping[str, Any], title: str) -> str:
    """The figures of :func:`score_identifier` as Markdown."""
    lines = [f"# {title}", "", "## Reference accuracy", ""]
    lines += ["| reference | films | upright frames | upright and reversed frames |"]
    lines += ["|---|---|---|---|"]
    for name in ("C2", "S1"):
        a = scores["reference_accuracy"][name]
        b = scores["reference_accuracy_both_orientations"][name]
        lines.append(
            f"| {name} ({REFERENCE_REGION[name]} films) | {a['films']} | "
            f"{a['correct']}/{a['films']} = {_pct(a['accuracy'])} | "
            f"{b['correct']}/{b['films']} = {_pct(b['accuracy'])} |"
        )
    chest = scores["chest_false_references"]
    lines += [
        "",
        f"Chest films with an upright patch classed C2 or S1: {chest['flagged']}/"
        f"{chest['films']} ({_pct(chest['rate'])}).",
        "",
        "## Per class, all patches (upright and reversed)",
        "",
        "| class | precision | recall | F1 | patches |",
        "|---|---|---|---|---|",
    ]
    report = scores["report"]
    for name in CLASSES:
        c = report["classes"][name]
        lines.append(
            f"| {name} | {_pct(c['precision'])} | {_pct(c['recall'])} | {_pct(c['f1'])} | "
            f"{c['support']} |"
        )
    lines += [
        "",
        f"Macro F1 {_pct(report['macro_f1'])}, balanced accuracy "
        f"{_pct(report['balanced_accuracy'])}, accuracy {_pct(report['accuracy'])}.",
        "",
        "## Confusion matrix, all patches",
        "",
        *_matrix_lines(scores["confusion"]),
        "",
        "## Confusion matrix, upright frames",
        "",
        *_matrix_lines(scores["confusion_upright"]),
        "",
        "## Confusion matrix, reversed frames (every true class is other)",
        "",
        *_matrix_lines(scores["confusion_reversed"]),
        "",
        "Reversed reference patches: "
        + "; ".join(
            f"{name} upside down ({r['patches']}) called "
            + ", ".join(f"{k} {v}" for k, v in r["called"].items())
            for name, r in scores["reversed_references"].items()
        )
        + ".",
    ]
    wrong = [
        (name, w)
        for name in ("C2", "S1")
        for w in scores["reference_accuracy_both_orientations"][name]["wrong"]
    ]
    if wrong:
        lines += ["", "Films where another patch outscored the reference (both orientations):", ""]
        for name, (case, label, rev) in wrong:
            lines.append(f"- {name}: case {case}, {label}{' reversed' if rev else ''} chosen")
    return "\n".join(lines) + "\n"
