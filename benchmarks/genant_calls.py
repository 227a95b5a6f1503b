"""Measure the stack's moderate and severe fracture calls on validation phantoms: how many
films with a true severe (Genant 3) fracture get a severe call, how many without one get a
false one, and how many normal bodies are called moderate or severe, with the severe
call's margin swept.

Usage: python benchmarks/genant_calls.py [--seed 3000 --n 60 --appearance randomised
           --threads 1 --out benchmarks/results/genant_calls_randomised_3000.json]

Films are rendered at the detector's pitch, as ``pacsnode evaluate stack`` renders them.
Never run on the test seed (9000) or a held-out appearance family: the margin and the
shape checks of ``pacsnode.analysis.findings`` are chosen here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from pacsnode.analysis.findings import MODERATE_MARGIN
from pacsnode.analysis.naming import references_for
from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.training.annotations import phantom_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.appearance import HELD_OUT_FAMILIES
from pacsnode.training.phantom.dicom import body_part_examined
from pacsnode.training.stack_eval import match_film

SEVERE_MARGINS = (0.0, 0.03, 0.05, 0.08, 0.12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3000)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--appearance", default="randomised")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    if args.seed == 9000 or args.appearance in HELD_OUT_FAMILIES:
        raise SystemExit("the test seed and the held-out families are never tuned on")
    out_path = args.out or Path(
        f"benchmarks/results/genant_calls_{args.appearance}_{args.seed}.json"
    )
    import torch

    torch.set_num_threads(args.threads)
    stack = Stack.load(args.models)
    films = []  # per film: truth has a severe fracture, the losses of moderate-or-worse calls
    normal = moderate_on_normal = true_moderate = true_moderate_called = 0
    for index in tqdm(range(args.n), desc="films", unit="film"):
        phantom = make_phantom(args.seed, index, appearance=args.appearance)
        film = phantom_film(phantom)
        result = stack.read(
            film.image,
            references=references_for([body_part_examined(phantom.scene.region)]),
            spacing_mm=film.spacing_mm,
        )
        truth = phantom.truth["vertebrae"]
        severe_truth = any(v["genant_grade"] == 3 for v in truth)
        if result.reading is None:
            films.append((severe_truth, []))
            continue
        vertebrae = result.reading.vertebrae
        # A call of 2 or 3 is past the moderate margin and passed the shape checks; whether
        # it is severe at margin m depends on its loss alone.
        films.append(
            (
                severe_truth,
                [
                    v.finding.height_loss
                    for v in vertebrae
                    if v.finding is not None and v.finding.grade >= 2
                ],
            )
        )
        for i, j, _, _ in match_film([v.mask for v in vertebrae], film).pairs:
            finding = vertebrae[i].finding
            if finding is None:
                continue
            if truth[j]["genant_grade"] == 0:
                normal += 1
                moderate_on_normal += finding.grade >= 2
            elif truth[j]["genant_grade"] >= 2:
                true_moderate += 1
                true_moderate_called += finding.grade >= 2
    positives = sum(severe for severe, _ in films)
    sweep = {}
    for margin in SEVERE_MARGINS:
        flagged = [any(loss >= 0.40 + margin for loss in losses) for _, losses in films]
        found = sum(f for f, (severe, _) in zip(flagged, films, strict=True) if severe)
        false = sum(f for f, (severe, _) in zip(flagged, films, strict=True) if not severe)
        sweep[f"{margin:.2f}"] = {
            "films_with_severe_fracture_flagged": found,
            "films_without_flagged": false,
        }
    out = {
        "data": vars(args) | {"out": str(out_path), "models": str(args.models)},
        "models": stack.versions,
        "moderate_margin": MODERATE_MARGIN,
        "films": len(films),
        "films_with_severe_fracture": positives,
        "severe_call_by_margin": sweep,
        "normal_vertebrae_graded": normal,
        "normal_called_moderate_or_severe": moderate_on_normal,
        "true_moderate_or_severe_graded": true_moderate,
        "true_moderate_or_severe_called": true_moderate_called,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
