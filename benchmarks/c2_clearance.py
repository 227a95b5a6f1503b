"""The disc space below C2 on annotated outlines: per cervical training phantom, the
shortest distance between each pair of neighbouring outlines (``clearances``) over the
chain's median, for the C2-C3 pair and for every other pair. ``C2_CLEARANCE`` in
``pacsnode.analysis.naming`` is set under the C2-C3 figures.

Usage: python benchmarks/c2_clearance.py [--renderer phantom|drr --seed 1000 --n 120
           --region cervical]

Run on training seeds only: a threshold is chosen from this.
"""

from __future__ import annotations

import argparse

import numpy as np

from pacsnode.analysis.naming import clearances
from pacsnode.cli.segmenter import TEST_SEED
from pacsnode.training.phantom import make_drr_phantom, make_phantom
from pacsnode.training.phantom.geometry import polygon_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renderer", choices=["phantom", "drr"], default="phantom")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--region", choices=["cervical", "lumbar"], default="cervical")
    args = parser.parse_args()
    if args.seed == TEST_SEED:
        parser.error("not on the test seed: a threshold is chosen from this")
    reference, other = [], []
    for index in range(args.n):
        make = make_drr_phantom if args.renderer == "drr" else make_phantom
        phantom = make(args.seed, index, args.region, size_px=800, appearance="randomised")
        shape = phantom.radiograph.display.shape
        found = [
            (str(v["label"]), polygon_mask(np.asarray(v["outline"]), shape))
            for v in phantom.truth["vertebrae"]
        ]
        found = [(label, mask) for label, mask in found if mask.any()]
        if len(found) < 4:
            continue
        gaps = clearances([mask for _, mask in found])
        usual = float(np.median(gaps))
        for k, gap in enumerate(gaps):
            upper, lower = found[k][0], found[k + 1][0]
            (reference if upper == "C2" or lower == "S1" else other).append(gap / usual)
    for name, ratios in (("reference pair (C2-C3 or L5-S1)", reference), ("other pairs", other)):
        if ratios:
            print(
                f"{args.renderer} {args.region} {name}: n {len(ratios)}, "
                f"min {min(ratios):.2f}, 1st percentile {np.percentile(ratios, 1):.2f}, "
                f"median {np.median(ratios):.2f}"
            )


if __name__ == "__main__":
    main()
