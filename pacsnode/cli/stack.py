"""``pacsnode evaluate stack``: the whole stack, film to named outlines, on held-out films."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pacsnode.cli._args import int_at_least
from pacsnode.cli.segmenter import TEST_SEED
from pacsnode.errors import PacsnodeError

__all__ = ["DRR_TIER", "add_stack_commands", "data_seeds", "markdown_report"]

DRR_TIER = "drr"
"""The tier of films from the second renderer (:mod:`pacsnode.training.phantom.drr`)."""


def add_stack_commands(model_parser: Callable[..., argparse.ArgumentParser]) -> None:
    ev = model_parser(
        "evaluate",
        "measure trained networks on held-out films",
        "the whole stack: detection, Dice, identification, paths compared",
        (
            "Run the full stack (localiser, detector, semantic UNet, patch segmenter, "
            "ensemble, identifier) on held-out films and score it against their outlines: "
            "detection recall and precision at IoU > 0.5, Dice per vertebra, identification "
            "accuracy on cervical and lumbar films, and semantic against instance against "
            "ensemble (Dice per vertebra label, panoptic quality). On phantoms, also the ER "
            "read-out against the truth's: Cobb angles, step-offs, slips and Meyerding "
            "grades, prevertebral soft tissue, and each critical flag's sensitivity and "
            "specificity. Writes PREFIX.json and PREFIX.md."
        ),
        model="stack",
    )
    ev.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    ev.add_argument(
        "--data", default="phantoms", help="'phantoms' (default) or a folder of annotated films"
    )
    ev.add_argument("--test-seed", type=int_at_least(0), default=TEST_SEED)
    ev.add_argument("--n-test", type=int_at_least(1), default=60, help="phantom films (60)")
    ev.add_argument("--start", type=int_at_least(0), default=0, help="first phantom index")
    ev.add_argument(
        "--render-px",
        type=int_at_least(200),
        help="phantom long side in pixels (default: the detector's pitch, as a DICOM film)",
    )
    ev.add_argument(
        "--workers", type=int_at_least(1), default=1, help="processes rendering phantoms (1)"
    )
    ev.add_argument(
        "--appearance",
        default="randomised,scanned",
        help=(
            "comma-separated phantom tiers, reported side by side: 'randomised' (the "
            "training families, in family), 'classic', a single family, a held-out "
            "family such as 'scanned' (out of family), or 'drr' (films of the 3-D "
            "cone-beam renderer). Default: randomised,scanned"
        ),
    )
    ev.add_argument(
        "--no-header",
        action="store_true",
        help="ignore the films' Body Part Examined (as for exported pictures without one)",
    )
    ev.add_argument("--out", type=Path, required=True, help="output prefix")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)


def data_seeds(manifest: dict[str, Any]) -> set[int]:
    """Every phantom seed a model's manifest says it was trained or validated on."""
    seeds: set[int] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif key.endswith("seed") and isinstance(node, int) and key != "seed_init":
            seeds.add(node)

    walk(manifest.get("training", {}).get("data", {}))
    return seeds


def _films(
    args: argparse.Namespace, appearance: str = "classic"
) -> tuple[int, Callable[[], Iterator[Any]]]:
    """How many films, and a factory of (film, region, truth, header references)."""
    from pacsnode.training.annotations import read_folder

    if args.data != "phantoms":
        films = read_folder(Path(args.data))
        return len(films), lambda: ((f, None, None, None) for f in films)

    jobs = [
        (args.test_seed, i, args.render_px, appearance, args.no_header)
        for i in range(args.start, args.start + args.n_test)
    ]

    def phantoms() -> Iterator[Any]:
        if args.workers == 1:
            yield from map(_render, jobs)
            return
        with ProcessPoolExecutor(args.workers) as pool:
            yield from pool.map(_render, jobs)

    return args.n_test, phantoms


def _render(
    job: tuple[int, int, int | None, str, bool],
) -> tuple[Any, str, dict[str, Any], frozenset[str] | None]:
    """One test phantom as an annotated film, its region, its truth and the references its
    DICOM header's Body Part Examined allows (in a worker process)."""
    from pacsnode.analysis.naming import references_for
    from pacsnode.training.annotations import phantom_film
    from pacsnode.training.phantom import make_phantom
    from pacsnode.training.phantom.dicom import body_part_examined

    seed, index, render_px, appearance, no_header = job
    if appearance == DRR_TIER:
        from pacsnode.training.phantom import make_drr_phantom

        phantom = make_drr_phantom(seed, index, size_px=render_px)
    else:
        phantom = make_phantom(seed, index, size_px=render_px, appearance=appearance)
    region = phantom.scene.region
    references = None if no_header else references_for([body_part_examined(region)])
    return phantom_film(phantom), region, phantom.truth, references


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.analysis.stack import Stack
    from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
    from pacsnode.training.stack_eval import score_film, summarise

    models = args.models or DEFAULT_MODELS_DIR
    stack = Stack.load(models)
    if args.data == "phantoms":
        manifests = {
            "localiser": stack.localiser.manifest,
            "detector": stack.detector.manifest,
            "semantic": stack.semantic.manifest,
            "segmenter": stack.segmenter.manifest,
            "identifier": stack.identifier.manifest,
        }
        for name, manifest in manifests.items():
            if args.test_seed in data_seeds(manifest):
                raise PacsnodeError(
                    f"the {name} was trained or validated on seed {args.test_seed}: not a test set"
                )
    tiers = [t.strip() for t in args.appearance.split(",") if t.strip()]
    if args.data != "phantoms":
        tiers = ["folder"]
    else:
        from pacsnode.training.phantom.appearance import ALL_FAMILIES, RANDOMISED

        unknown = [t for t in tiers if t not in (RANDOMISED, DRR_TIER, *ALL_FAMILIES)]
        if unknown or not tiers:
            raise PacsnodeError(
                f"unknown appearance {unknown or args.appearance!r}; expected "
                f"{RANDOMISED!r}, {DRR_TIER!r} or families of {ALL_FAMILIES}"
            )
    results: dict[str, Any] = {}
    for tier in tiers:
        count, films = _films(args, tier)
        scores = []
        with tqdm(total=count, unit="film", desc=tier, disable=args.quiet, file=sys.stderr) as bar:
            for film, region, truth, references in films():
                scores.append(score_film(stack, film, region, truth=truth, references=references))
                bar.update(1)
        results[tier] = summarise(scores)
    table: dict[str, Any] = {"tiers": results}
    table["data"] = (
        {
            "source": "phantoms",
            "seed": args.test_seed,
            "films": count,
            "start": args.start,
            "render": f"{args.render_px} px long side" if args.render_px else "detector pitch",
            "header_prior": not args.no_header,
            "tiers": _tier_notes(tiers),
        }
        if args.data == "phantoms"
        else {"source": args.data, "films": count}
    )
    table["models"] = stack.versions
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(table, indent=1, default=float) + "\n")
    markdown = markdown_report(table)
    Path(f"{args.out}.md").write_text(markdown)
    print(markdown)
    return 0


def _tier_notes(tiers: list[str]) -> dict[str, str]:
    from pacsnode.training.phantom.appearance import HELD_OUT_FAMILIES, RANDOMISED

    notes = {}
    for t in tiers:
        if t in HELD_OUT_FAMILIES:
            notes[t] = "out of family: never used for training, validation or tuning"
        elif t == DRR_TIER:
            notes[t] = (
                "out of family: the 3-D cone-beam renderer under its own processing, never "
                "trained on (the identifier trained on this renderer's films under the "
                "training families' processing; validation films of this look, never the "
                "test seed's, have informed choices)"
            )
        elif t == RANDOMISED:
            notes[t] = "in family: one training family drawn per film"
        else:
            notes[t] = "in family: a training family"
    return notes


def markdown_report(table: dict[str, Any]) -> str:
    """The tiers side by side, then each tier's own tables."""
    tiers = table["tiers"]
    lines = [
        f"# Whole stack on held-out films ({table['data']})",
        "",
        "Naming: identification is right names over matched vertebrae (unnamed count as "
        "not identified); the wrong-name rate is wrong names over all names given. Region: "
        "spine region sensitivity and specificity on the film's pixels, mean over films. "
        "False fracture calls: Genant >= 2 called on matched normal vertebrae.",
        "",
        "| tier | films | recall | precision | Dice | identification (C+L) | wrong-name rate "
        "(C+L) | names given (C+L) | wrong-name rate (all films, chest included) | region "
        "sensitivity | region specificity | false Genant >= 2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in tiers.items():
        n = t["naming"]["cervical_and_lumbar"]
        a = t["naming"]["all_films"]
        r = t["region"]
        f = t["fractures"]
        lines.append(
            f"| {name} | {t['films']} | {t['recall']:.3f} | {t['precision']:.3f} | "
            f"{t['dice']['mean']:.3f} | {n['identification']:.3f} | {n['wrong_name_rate']:.3f} "
            f"({n['wrong_names']}/{n['named']}) | {n['named']}/{n['matched']} | "
            f"{a['wrong_name_rate']:.3f} ({a['wrong_names']}/{a['named']}) | "
            f"{r['sensitivity']['mean']:.3f} | {r['specificity']['mean']:.3f} | "
            f"{f['false_grade2plus_rate']:.3f} ({f['false_grade2plus']}/{f['normal_measured']}) |"
        )
    lines.append("")
    lines.append(
        "| tier | region | films | recall | precision | Dice | identification | "
        "wrong-name rate | films named | films abstained |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, t in tiers.items():
        for region, r in t["by_region"].items():
            n = t["naming"].get(region, {})
            lines.append(
                f"| {name} | {region} | {r['films']} | {r['recall']:.3f} | "
                f"{r['precision']:.3f} | {r['dice']:.3f} | {n.get('identification', 0):.3f} | "
                f"{n.get('wrong_name_rate', 0):.3f} ({n.get('wrong_names', 0)}/"
                f"{n.get('named', 0)}) | {n.get('films_named', 0)} | "
                f"{n.get('films_abstained', 0)} |"
            )
    lines += _readout_report(tiers)
    for name, t in tiers.items():
        lines += ["", f"## Tier {name}", ""]
        lines.append(_tier_report(dict(t, data=table["data"])))
    return "\n".join(lines)


def _num(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # nan: nothing to show


def _readout_report(tiers: dict[str, Any]) -> list[str]:
    """The ER read-out against the phantoms' truth, tiers side by side."""
    lines = [
        "",
        "## ER read-out against the truth",
        "",
        "On phantoms, whose truth is measured on the true corners by the read-out's own "
        "definitions. Cobb: films whose truth has the angle on which the read-out carries "
        "it, and the mean absolute error there. Step-offs (the shift both lines share) "
        "and slips: mean / 95th percentile absolute error on read pairs matched to "
        "adjacent true pairs. "
        "Kappas are linearly weighted (Genant over the matched vertebrae graded). Soft "
        "tissue: mean / 95th percentile error, films read of films with a true thickness.",
        "",
        "| tier | films read | C2-C7 carried | C2-C7 error (°) | L1-S1 carried | "
        "L1-S1 error (°) | step-off error (mm) | slip error (points) | Meyerding kappa | "
        "Genant kappa | C2 soft tissue error (mm) | C6 soft tissue error (mm) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    flags: list[str] = []
    for name, t in tiers.items():
        r = t.get("readout")
        if r is None:
            continue
        genant = _num(r["genant"]["linear_kappa"], 3)
        if not r["available"]:
            lines.append(
                f"| {name} | not available ({r['films_with_truth']} films with truth) | "
                + "- | " * 7
                + f"{genant} | - | - |"
            )
            continue
        cells = [f"{r['films_read']}/{r['films_with_truth']}"]
        for span in ("C2-C7", "L1-S1"):
            c = r["cobb"].get(span)
            cells += (
                [f"{c['carried']}/{c['films']}", _num(c["mae_degrees"], 1)] if c else ["-", "-"]
            )
        step = r["step_offs_mm"]["step_off"]
        slip = r["slips"]["percent_points"]
        cells += [
            f"{_num(step['mean'])} / {_num(step['p95'])} ({r['step_offs_mm']['pairs']} pairs)",
            f"{_num(slip['mean'], 1)} / {_num(slip['p95'], 1)} ({r['slips']['pairs']} pairs)",
            _num(r["slips"]["meyerding_linear_kappa"], 3),
            genant,
        ]
        for level in ("C2", "C6"):
            soft = r["soft_tissue"].get(level)
            cells.append(
                f"{_num(soft['error_mm']['mean'])} / {_num(soft['error_mm']['p95'])} "
                f"({soft['read']}/{soft['films']})"
                if soft
                else "-"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for kind, f in r["flags"].items():
            flags.append(
                f"| {name} | {kind} | {f['tp'] + f['fn']} | {_num(f['sensitivity'], 3)} | "
                f"{_num(f['specificity'], 3)} | {f['tp']} / {f['fn']} / {f['fp']} / {f['tn']} |"
            )
    if flags:
        lines += [
            "",
            "Critical flags at film level, against the truth's (step over 3 mm, soft tissue "
            "over 7 mm at C2 or 22 mm at C6, Meyerding II or worse, Genant 3):",
            "",
            "| tier | flag | films flagged in truth | sensitivity | specificity | "
            "TP / FN / FP / TN |",
            "|---|---|---|---|---|---|",
            *flags,
        ]
    return lines


def _tier_report(table: dict[str, Any]) -> str:
    """One tier's tables."""
    data = table["data"]
    lines = [
        f"# Whole stack on {table['films']} held-out films ({data})",
        "",
        f"{table['vertebrae']} annotated vertebrae.",
        "",
        "| detection recall | detection precision | Dice (matched) | identification accuracy |",
        "|---|---|---|---|",
        "| {:.3f} | {:.3f} | {:.3f} ± {:.3f} | {:.3f} ({} vertebrae, {}) |".format(
            table["recall"],
            table["precision"],
            table["dice"]["mean"],
            table["dice"]["sd"],
            table["identification"]["accuracy"],
            table["identification"]["vertebrae"],
            table["identification"]["films"],
        ),
        "",
        "## By region",
        "",
        "| region | films | recall | precision | Dice | identification | reference found |",
        "|---|---|---|---|---|---|---|",
    ]
    for region, r in table["by_region"].items():
        lines.append(
            f"| {region} | {r['films']} | {r['recall']:.3f} | {r['precision']:.3f} | "
            f"{r['dice']:.3f} | {r['identification_accuracy']:.3f} | {r['reference_found']:.2f} |"
        )
    lines += [
        "",
        "## Semantic against instance against ensemble",
        "",
        "| path | recall | precision | panoptic quality | Dice per vertebra |",
        "|---|---|---|---|---|",
    ]
    for name, p in table["paths"].items():
        d = p["dice_all_vertebrae"]
        lines.append(
            f"| {name} | {p['recall']:.3f} | {p['precision']:.3f} | "
            f"{p['panoptic_quality']:.3f} | {d['mean']:.3f} ± {d['sd']:.3f} |"
        )
    labels = sorted(
        {k for p in table["paths"].values() for k in p["dice_by_label"]},
        key=_spine_position,
    )
    lines += ["", "Dice by vertebra label:", "", "| label | semantic | instance | ensemble |"]
    lines.append("|---|---|---|---|")
    for label in labels:
        cells = []
        for name in ("semantic", "instance", "ensemble"):
            d = table["paths"][name]["dice_by_label"].get(label)
            cells.append(f"{d['mean']:.3f} (n={d['n']})" if d else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Median seconds per stage: "
        + ", ".join(f"{k} {v:.3f}" for k, v in table["stage_seconds_median"].items()),
        "",
    ]
    return "\n".join(lines)


def _spine_position(label: str) -> int:
    from pacsnode.analysis.naming import SPINE_ORDER

    return SPINE_ORDER.index(label) if label in SPINE_ORDER else len(SPINE_ORDER)
