"""Write ``models/stack.json``: the shipped stack's model versions, its held-out evaluation
(from ``pacsnode evaluate stack``'s JSON) and the figures of a small fixed regression set
that ``tests/regression/test_shipped_stack.py`` re-runs.

Usage: python benchmarks/record_stack.py --evaluation benchmarks/results/stack_eval.json
           [--seed 9000 --start 0 --n 4 --size-px 1000 --out-of-family scanned --n-oof 6]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pacsnode.analysis.stack import MODEL_FILES, Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.training.stack_eval import regression_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluation", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=9000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--size-px", type=int, default=1000)
    parser.add_argument("--out-of-family", default="scanned", help="held-out family")
    parser.add_argument("--n-oof", type=int, default=6)
    args = parser.parse_args()
    stack = Stack.load(DEFAULT_MODELS_DIR)
    evaluation = json.loads(args.evaluation.read_text())
    if evaluation["models"] != stack.versions:
        raise SystemExit(f"{args.evaluation} was measured on other models than models/ holds")
    figures = regression_figures(
        stack, seed=args.seed, start=args.start, n=args.n, size_px=args.size_px
    )
    oof = regression_figures(
        stack,
        seed=args.seed,
        start=args.start,
        n=args.n_oof,
        size_px=args.size_px,
        appearance=args.out_of_family,
    )
    keys = (
        "films",
        "vertebrae",
        "recall",
        "precision",
        "dice",
        "naming",
        "region",
        "fractures",
        "by_region",
    )
    record = {
        "schema": "pacsnode-stack-record/2",
        "models": stack.versions,
        "evaluation": {
            "data": evaluation["data"],
            "tiers": {
                name: {key: tier[key] for key in keys} for name, tier in evaluation["tiers"].items()
            },
        },
        "evaluation_file": str(args.evaluation),
        "regression": {
            "seed": args.seed,
            "start": args.start,
            "n": args.n,
            "size_px": args.size_px,
            "appearance": "classic",
            "figures": figures,
        },
        "regression_out_of_family": {
            "seed": args.seed,
            "start": args.start,
            "n": args.n_oof,
            "size_px": args.size_px,
            "appearance": args.out_of_family,
            "figures": oof,
        },
    }
    summary = {
        name: {
            "recall": tier["recall"],
            "precision": tier["precision"],
            "dice": tier["dice"]["mean"],
            "identification": tier["naming"]["cervical_and_lumbar"]["identification"],
            "wrong_name_rate": tier["naming"]["cervical_and_lumbar"]["wrong_name_rate"],
        }
        for name, tier in evaluation["tiers"].items()
    }
    for kind in MODEL_FILES:
        path = (DEFAULT_MODELS_DIR / MODEL_FILES[kind]).with_suffix(".json")
        manifest = json.loads(path.read_text())
        manifest.setdefault("evaluation", {})["whole_stack"] = {
            "file": "models/stack.json",
            "data": evaluation["data"],
            "tiers": summary,
        }
        path.write_text(json.dumps(manifest, indent=1) + "\n")
    out = DEFAULT_MODELS_DIR / "stack.json"
    out.write_text(json.dumps(record, indent=1, default=float) + "\n")
    print(
        json.dumps(
            [record["regression"], record["regression_out_of_family"]], indent=1, default=float
        )
    )


if __name__ == "__main__":
    main()
