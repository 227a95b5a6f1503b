"""Endplate angles the stack measures, against the phantoms' true endplates: per body the
stack found and matched (IoU > 0.5), the angle between each fitted endplate and the line
through the true corners, and the corners' distance from the true ones in mm. What the
Cobb angles are built from (`pacsnode.analysis.measure`, `readout.cobb_degrees`).

Usage: python benchmarks/endplate_fit.py [--seed 3000 --n 40 --appearance randomised
           --out benchmarks/results/endplate_fit.json]

Validation seeds only: the fit is chosen from this, so never the test seed.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.cli.segmenter import TEST_SEED
from pacsnode.cli.stack import _render
from pacsnode.training.stack_eval import match_film

ENDS = {"C2": "inferior", "C7": "inferior", "L1": "superior", "S1": "superior"}
"""The endplates the Cobb spans use (C2-C7, L1-S1)."""


def _degrees(start, end) -> float:
    return math.degrees(math.atan2(end[1] - start[1], end[0] - start[0]))


def _off(read: float, true: float) -> float:
    return abs((read - true + 180.0) % 360.0 - 180.0)


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "mean": round(float(a.mean()), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
        "over_5": round(float(np.mean(a > 5.0)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--appearance", default="randomised")
    parser.add_argument("--models", default=str(DEFAULT_MODELS_DIR))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.seed == TEST_SEED:
        parser.error("not on the test seed: the endplate fit is chosen from this")
    torch.set_num_threads(1)
    stack = Stack.load(Path(args.models))
    superior, inferior, corners = [], [], []
    ends: dict[str, list[float]] = {label: [] for label in ENDS}
    for index in tqdm(range(args.n), desc="films"):
        film, _, _, references = _render((args.seed, index, None, args.appearance, False))
        reading = stack.read(film.image, spacing_mm=film.spacing_mm, references=references).reading
        if reading is None:
            continue
        match = match_film([v.mask for v in reading.vertebrae], film)
        for i, j, _, _ in match.pairs:
            heights, truth = reading.vertebrae[i].heights, film.vertebrae[j]
            if heights is None or truth.superior is None or truth.inferior is None:
                continue
            if heights.superior_endplate is None or heights.inferior_endplate is None:
                continue
            # Truth endplates run anterior then posterior; the stack's posterior then anterior.
            true_sup = _degrees(truth.superior[1], truth.superior[0])
            true_inf = _degrees(truth.inferior[1], truth.inferior[0])
            sup = _off(_degrees(*heights.superior_endplate), true_sup)
            inf = _off(_degrees(*heights.inferior_endplate), true_inf)
            if truth.label != "C2":  # C2's superior "endplate" is its dens
                superior.append(sup)
            inferior.append(inf)
            if truth.label in ENDS:
                ends[str(truth.label)].append(sup if ENDS[str(truth.label)] == "superior" else inf)
            read = (
                heights.anterior_superior,
                heights.posterior_superior,
                heights.anterior_inferior,
                heights.posterior_inferior,
            )
            true = (truth.superior[0], truth.superior[1], truth.inferior[0], truth.inferior[1])
            mm = film.spacing_mm or 1.0
            corners += [math.dist(r, t) * mm for r, t in zip(read, true, strict=True)]
    result = {
        "seed": args.seed,
        "films": args.n,
        "appearance": args.appearance,
        "models": args.models,
        "superior_degrees_without_c2": _summary(superior),
        "inferior_degrees": _summary(inferior),
        "cobb_endplates_degrees": {
            f"{label} {ENDS[label]}": _summary(values) for label, values in ends.items()
        },
        "corner_error_mm": _summary(corners),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
