"""How whole each path's C2 is: per cervical validation film, the Dice and area (over the
truth's) of the semantic path's, the instance path's and the ensemble's mask best matching
the true C2, and why the chain was left unnamed, if it was.

Usage: python benchmarks/c2_paths.py [--models models --seed 3000 --n 40
           --appearance classic --out PREFIX]

A segmenter that cuts C2's dens makes the naming's dens check abstain on a true C2. Never
run on the test seed (9000) or a held-out appearance family: choices are made from this.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.cli.segmenter import TEST_SEED
from pacsnode.cli.stack import _render
from pacsnode.training.phantom.appearance import HELD_OUT_FAMILIES
from pacsnode.training.phantom.geometry import polygon_mask


def _best(masks: list[np.ndarray], truth: np.ndarray) -> tuple[float, float]:
    """(Dice, area over the truth's) of the mask that overlaps ``truth`` best."""
    best = (0.0, 0.0)
    for mask in masks:
        inter = int(np.logical_and(mask, truth).sum())
        if inter:
            dice = 2 * inter / (int(mask.sum()) + int(truth.sum()))
            if dice > best[0]:
                best = (dice, int(mask.sum()) / int(truth.sum()))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--n", type=int, default=40, help="films looked through (cervical kept)")
    parser.add_argument("--appearance", default="classic")
    parser.add_argument("--out", type=Path, help="write PREFIX.json")
    args = parser.parse_args()
    if args.seed == TEST_SEED or args.appearance in HELD_OUT_FAMILIES:
        parser.error("not on the test seed or a held-out family: choices are made from this")
    stack = Stack.load(args.models)
    rows = []
    for index in range(args.n):
        film, _region, _truth, references = _render(
            (args.seed, index, None, args.appearance, False)
        )
        outlines = {str(v.label): np.asarray(v.outline) for v in film.vertebrae}
        if "C2" not in outlines:
            continue
        truth = polygon_mask(outlines["C2"], film.image.shape)
        result = stack.read(
            film.image, trace=True, spacing_mm=film.spacing_mm, references=references
        )
        row = {"case": film.case_id}
        paths = {
            "semantic": result.paths["semantic"],
            "instance": result.paths["instance"],
            "ensemble": [v.mask for v in result.reading.vertebrae],
        }
        for name, masks in paths.items():
            dice, area = _best(masks, truth)
            row[name] = {"dice": round(dice, 3), "area": round(area, 3)}
        row["abstention"] = result.reading.abstention
        rows.append(row)
        print(
            f"{row['case']} "
            + " | ".join(f"{k} Dice {row[k]['dice']:.2f} area {row[k]['area']:.2f}" for k in paths)
            + f" | {row['abstention'] or 'named'}",
            flush=True,
        )
    instance = [r["instance"]["dice"] for r in rows]
    summary = {
        "films": len(rows),
        "instance_dice_mean": round(float(np.mean(instance)), 3) if rows else None,
        "no_dens_abstentions": sum("no dens" in (r["abstention"] or "") for r in rows),
    }
    print(json.dumps(summary))
    if args.out:
        data = {"seed": args.seed, "appearance": args.appearance, "models": stack.versions}
        out = {"data": data, "summary": summary, "films": rows}
        args.out.with_suffix(".json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
