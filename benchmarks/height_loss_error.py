"""Measure how far the stack's height loss (Genant's measure) lies from the truth on
validation phantoms, for the margin a moderate or severe fracture call must clear.

Usage: python benchmarks/height_loss_error.py [--seed 3000 --n 40 --render-px 1000
           --appearance randomised --out benchmarks/results/height_loss_error.json]

Never run on the test seed (9000) or a held-out appearance family: the margin is tuned here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pacsnode.analysis.naming import references_for
from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.training.annotations import phantom_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.appearance import HELD_OUT_FAMILIES
from pacsnode.training.phantom.dicom import body_part_examined
from pacsnode.training.stack_eval import match_film


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--render-px", type=int, default=1000)
    parser.add_argument("--appearance", default="randomised")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/height_loss_error.json")
    )
    args = parser.parse_args()
    if args.seed == 9000 or args.appearance in HELD_OUT_FAMILIES:
        raise SystemExit("the test seed and the held-out families are never tuned on")
    stack = Stack.load(args.models)
    pairs = []
    for index in range(args.n):
        phantom = make_phantom(args.seed, index, size_px=args.render_px, appearance=args.appearance)
        film = phantom_film(phantom)
        result = stack.read(
            film.image,
            references=references_for([body_part_examined(phantom.scene.region)]),
            spacing_mm=film.spacing_mm,
        )
        if result.reading is None:
            continue
        found = match_film([v.mask for v in result.reading.vertebrae], film)
        for i, j, _, _ in found.pairs:
            finding = result.reading.vertebrae[i].finding
            true = phantom.truth["vertebrae"][j]
            if finding is not None:
                pairs.append((float(true["height_loss"]), float(finding.height_loss)))
    p = np.array(pairs)
    err = p[:, 1] - p[:, 0]
    normal = p[p[:, 0] < 0.2]
    out = {
        "data": vars(args) | {"out": str(args.out), "models": str(args.models)},
        "models": stack.versions,
        "vertebrae": len(p),
        "error_mean": float(err.mean()),
        "error_sd": float(err.std()),
        "error_abs_p95": float(np.percentile(np.abs(err), 95)),
        "normal_vertebrae": len(normal),
        "normal_measured_loss_p95": float(np.percentile(normal[:, 1], 95)),
        "normal_measured_loss_p99": float(np.percentile(normal[:, 1], 99)),
        "normal_called_grade2plus_at_margin": {
            f"{m:.2f}": float(np.mean(normal[:, 1] >= 0.25 + m))
            for m in (0.0, 0.03, 0.06, 0.09, 0.12)
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
