"""The localisation paper's Table 1 for trained localisers, on held-out films.

Per film and per model: at low resolution, pixel accuracy, Dice, sensitivity and specificity
of the thresholded network output against the resized outline union; at original resolution,
sensitivity and specificity of the output mapped back onto the film against the vertebra
outlines drawn at full resolution. Both as the paper does it (the raw network output) and as
the node uses it (the :class:`Localiser`: largest region only). Mean, std and the paired
t-test of each -R variant against its plain twin.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pacsnode.analysis.localise import Localiser, region_from_probability
from pacsnode.training.localiser.data import (
    DataError,
    film_pairs,
    outline_mask,
    read_annotated_film,
    spine_region_mask,
)
from pacsnode.training.metrics import ConfusionCounts, paired_t_test

__all__ = [
    "METRICS",
    "THRESHOLDS",
    "EvalFilm",
    "calibrate_thresholds",
    "evaluate_localisers",
    "folder_films",
    "markdown_table",
    "phantom_films",
    "score_film",
]

METRICS = (
    ("lowres", "accuracy"),
    ("lowres", "dice"),
    ("lowres", "sensitivity"),
    ("lowres", "specificity"),
    ("original", "sensitivity"),
    ("original", "specificity"),
    ("node", "sensitivity"),
    ("node", "specificity"),
)


@dataclass(frozen=True)
class EvalFilm:
    """One test film at its original resolution: ``mask`` its vertebral bodies (the
    original-resolution truth), ``target`` the localisation target (bodies and discs, the
    low-resolution truth once resized)."""

    name: str
    region: str
    image: NDArray[np.float32]
    mask: NDArray[np.bool_]
    target: NDArray[np.bool_]


def _phantom_film(job: tuple[int, int]) -> EvalFilm:
    from pacsnode.training.phantom.generate import make_phantom

    seed, index = job
    ph = make_phantom(seed, index)
    image = ph.radiograph.display.astype(np.float32)
    return EvalFilm(
        ph.case_id,
        ph.scene.region,
        image,
        outline_mask(ph.truth, image.shape),
        spine_region_mask(ph.truth, image.shape),
    )


def phantom_films(seed: int, n: int, *, start: int = 0, workers: int = 1) -> Iterator[EvalFilm]:
    """Phantoms ``seed``-``start`` .. at detector resolution, as their DICOM files hold them
    (the reader reproduces these pixels within 2e-3, see the phantom tests)."""
    jobs = [(seed, i) for i in range(start, start + n)]
    if workers <= 1:
        yield from map(_phantom_film, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_phantom_film, jobs)


def folder_films(directory: Path) -> Iterator[EvalFilm]:
    """Annotated films of a folder (see :func:`film_pairs`)."""
    for film, ann in film_pairs(directory):
        image, vertebrae, target = read_annotated_film(film, ann)
        yield EvalFilm(film.name, "unknown", image, vertebrae, target)


def _counts(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> dict[str, float]:
    c = ConfusionCounts.from_masks(pred, truth)
    return {
        "accuracy": c.accuracy,
        "dice": c.dice,
        "sensitivity": c.sensitivity,
        "specificity": c.specificity,
    }


def score_film(localiser: Localiser, film: EvalFilm) -> dict[str, Any]:
    """Every Table 1 figure of one model on one film (fractions, not percent)."""
    frame, prob = localiser.probability(film.image)
    raw = prob >= localiser.threshold
    lowres_truth = frame.mask_to_lowres(film.target)
    mapped = frame.to_film(prob) >= localiser.threshold
    node = region_from_probability(frame, prob, localiser.threshold)
    orig = _counts(mapped, film.mask)
    kept = _counts(node.mask, film.mask)
    return {
        "lowres": _counts(raw, lowres_truth),
        "original": {k: orig[k] for k in ("sensitivity", "specificity")},
        "node": {k: kept[k] for k in ("sensitivity", "specificity")},
        "regions": node.regions,
    }


THRESHOLDS = tuple(round(0.1 + 0.05 * k, 2) for k in range(17))  # 0.10 .. 0.90


def calibrate_thresholds(
    models: dict[str, Localiser],
    films: Iterator[EvalFilm],
    *,
    progress: Callable[[Iterator[EvalFilm]], Iterator[EvalFilm]] | None = None,
) -> dict[str, dict[str, Any]]:
    """For each model, the probability threshold that maximises the mean Youden index
    (sensitivity + specificity - 1) of the node's output (largest region, mapped back) on
    ``films``, which must be validation films, never the test set. Returns per model the
    chosen threshold and the whole sweep."""
    sums = {name: np.zeros((len(THRESHOLDS), 2)) for name in models}
    n = 0
    for film in progress(films) if progress else films:
        n += 1
        for name, loc in models.items():
            frame, prob = loc.probability(film.image)
            for k, t in enumerate(THRESHOLDS):
                c = ConfusionCounts.from_masks(
                    region_from_probability(frame, prob, t).mask, film.mask
                )
                sums[name][k] += (c.sensitivity, c.specificity)
    if n == 0:
        raise DataError("no calibration films")
    out = {}
    for name, total in sums.items():
        mean = total / n
        best = int(np.argmax(mean[:, 0] + mean[:, 1]))
        out[name] = {
            "threshold": THRESHOLDS[best],
            "criterion": "max mean Youden index of the node output",
            "films": n,
            "sweep": [
                {"threshold": t, "sensitivity": float(a), "specificity": float(b)}
                for t, (a, b) in zip(THRESHOLDS, mean, strict=True)
            ],
        }
    return out


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0}


def evaluate_localisers(
    models: dict[str, Localiser],
    films: Iterator[EvalFilm],
    *,
    progress: Callable[[Iterator[EvalFilm]], Iterator[EvalFilm]] | None = None,
) -> dict[str, Any]:
    """Score every model on every film; returns per-film scores, summaries and t-tests."""
    per_film: list[dict[str, Any]] = []
    for film in progress(films) if progress else films:
        if not film.mask.any():
            raise DataError(f"{film.name}: no vertebra in the ground truth")
        per_film.append(
            {
                "film": film.name,
                "region": film.region,
                "models": {name: score_film(loc, film) for name, loc in models.items()},
            }
        )
    if not per_film:
        raise DataError("no test films")
    summaries: dict[str, Any] = {}
    for name in models:
        summaries[name] = {
            f"{level}_{metric}": _summary([f["models"][name][level][metric] for f in per_film])
            for level, metric in METRICS
        }
        summaries[name]["single_region_fraction"] = float(
            np.mean([f["models"][name]["regions"] == 1 for f in per_film])
        )
    tests: dict[str, Any] = {}
    for name in models:
        twin = name[:-2] if name.endswith("-r") else None
        if twin is None or twin not in models or len(per_film) < 2:
            continue
        tests[name] = {}
        for level, metric in METRICS:
            a = [f["models"][name][level][metric] for f in per_film]
            b = [f["models"][twin][level][metric] for f in per_film]
            t = paired_t_test(a, b)
            tests[name][f"{level}_{metric}"] = {
                "versus": twin,
                "t": None if not np.isfinite(t.t) else float(t.t),
                "p": None if not np.isfinite(t.p_value) else float(t.p_value),
                "mean_difference": float(t.mean_difference),
                "significant": bool(t.significant()),
            }
    return {"n_films": len(per_film), "summary": summaries, "t_tests": tests, "films": per_film}


def markdown_table(results: dict[str, Any], order: Sequence[str]) -> str:
    """Table 1 in the paper's layout (percent, mean ± std); a figure of a -R variant that
    differs significantly (paired t-test, 5 %) from its plain twin is in bold."""
    head = (
        "| Network | Pixel accuracy | Dice | Sensitivity | Specificity | Sensitivity | "
        "Specificity | Sensitivity | Specificity |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        "| | *low resolution* | | | | *original resolution* | | *node (largest region)* | |\n"
    )
    rows = []
    for name in order:
        if name not in results["summary"]:
            continue
        cells = []
        for level, metric in METRICS:
            s = results["summary"][name][f"{level}_{metric}"]
            cell = f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
            test = results["t_tests"].get(name, {}).get(f"{level}_{metric}")
            if test and test["significant"]:
                cell = f"**{cell}**"
            cells.append(cell)
        label = name.replace("deconvnet", "DeConvNet").replace("fcn", "FCN").replace("unet", "UNet")
        rows.append(f"| {label.replace('-r', '-R')} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def dump(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
