"""``pacsnode train identifier`` and ``pacsnode evaluate identifier``: the network that
recognises the reference vertebrae C2 and S1, on phantom vertebra patches."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacsnode.cli._args import (
    add_run_arguments,
    batch_bar,
    films_bar,
    int_at_least,
    run_options,
    training_appearance,
)
from pacsnode.cli.region import add_data_arguments, annotated_films
from pacsnode.cli.segmenter import TEST_SEED
from pacsnode.errors import PacsnodeError

__all__ = ["add_identifier_commands"]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_identifier_commands(model_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the commands; ``model_parser(verb, verb_help, help, description, model=)``
    gives the parser of ``pacsnode VERB MODEL``."""
    tr = model_parser(
        "train",
        "train a network of the analysis stack",
        "the reference-vertebra identifier (C2, S1 or other)",
        (
            "Train the patch classifier that tells C2 and S1 from the other vertebrae on "
            "vertebra patches of phantoms or of a folder of annotated films, C2 and S1 "
            "turned upside down (and, with --beyond, the atlas above C2 and the sacrum "
            "below S1) counting as other. "
            "Checkpoints after every epoch (--resume continues); writes "
            "identifier.safetensors and its manifest in --out."
        ),
        model="identifier",
    )
    add_data_arguments(tr)
    tr.add_argument(
        "--frames",
        choices=["corners", "outline"],
        default="outline",
        help="patch frames sized by the outline's extent along and across the spine, as the "
        "stack frames the vertebrae it found (outline, the default), or by the body's "
        "corners and heights (corners: phantoms only)",
    )
    tr.add_argument(
        "--beyond",
        action="store_true",
        help="also a frame one vertebra past each reference (above C2, below S1: the atlas, "
        "the sacrum), labelled other and weighed as a reference patch (outline frames only; "
        "on development phantoms it cost C2 more than it gained on S1, so it is off)",
    )
    tr.add_argument(
        "--neighbours",
        action="store_true",
        help="C3 and L5, the vertebrae next to C2 and S1 that the stack takes for them when "
        "the reference itself is missed, weigh as much as a C2 or S1 patch in the loss",
    )
    tr.add_argument(
        "--context",
        type=_positive_float,
        help="patch side over the segmenter's (default: the identifier's CONTEXT, 2.0)",
    )
    tr.add_argument("--width", type=int_at_least(1), default=12, help="first-stage channels")
    add_run_arguments(
        tr, epochs=20, batch_size=64, lr=2e-3, optimiser="AdamW", lr_type=_positive_float
    )
    tr.set_defaults(func=_cmd_train)

    ev = model_parser(
        "evaluate",
        "measure trained networks on held-out films",
        "the reference-vertebra identifier on held-out films",
        (
            "Score an identifier on vertebra patches of held-out phantoms (a seed it was "
            "neither trained nor validated on): confusion matrix, per-class precision and "
            "recall, and the reference accuracy (on cervical films, is the most C2-like "
            "vertebra C2; on lumbar films, the most S1-like S1); writes PREFIX.json and "
            "PREFIX.md."
        ),
        model="identifier",
    )
    ev.add_argument("model", type=Path, help="run folder or .safetensors file")
    ev.add_argument("--test-seed", type=int_at_least(0), default=TEST_SEED)
    ev.add_argument("--n-test", type=int_at_least(1), default=100, help="phantom films (100)")
    ev.add_argument("--out", type=Path, required=True, help="output prefix")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    ca = model_parser(
        "calibrate",
        "choose operating thresholds on validation films",
        "the identifier's temperature and naming threshold",
        (
            "Run the whole stack on validation phantoms (a seed neither the test seed nor "
            "one the networks trained on; the training appearance families only), fit a "
            "temperature to the identifier's probabilities on the vertebrae the stack "
            "finds, and choose the lowest naming threshold whose names are wrong at most "
            "--max-wrong of the time. Writes both into the identifier's manifest (the "
            "weights do not change) and the sweep to --report."
        ),
        model="identifier",
    )
    ca.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    ca.add_argument("--seed", type=int_at_least(0), default=3000, help="phantom seed (3000)")
    ca.add_argument("--n", type=int_at_least(1), default=60, help="films (60)")
    ca.add_argument("--render-px", type=int_at_least(200), default=1000)
    ca.add_argument("--appearance", type=training_appearance, default="randomised")
    ca.add_argument("--max-wrong", type=float, default=0.01, help="wrong-name rate bar (0.01)")
    ca.add_argument("--report", type=Path, help="write the sweep here (JSON)")
    ca.add_argument("--dry-run", action="store_true", help="do not write the manifest")
    ca.add_argument("--quiet", action="store_true", help="no progress bar")
    ca.set_defaults(func=_cmd_calibrate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np

    from pacsnode.analysis.naming import references_for
    from pacsnode.analysis.stack import MODEL_FILES, Stack
    from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
    from pacsnode.cli.stack import data_seeds
    from pacsnode.training.annotations import phantom_film
    from pacsnode.training.identifier.calibrate import (
        MIN_THRESHOLD,
        CalibrationFilm,
        choose_threshold,
        fit_temperature,
    )
    from pacsnode.training.phantom import make_phantom
    from pacsnode.training.phantom.dicom import body_part_examined
    from pacsnode.training.stack_eval import match_film

    if args.seed == TEST_SEED:
        raise PacsnodeError(f"seed {TEST_SEED} is the test seed: never calibrate on it")
    models = args.models or DEFAULT_MODELS_DIR
    stack = Stack.load(models)
    if args.seed in data_seeds(stack.identifier.manifest):
        raise PacsnodeError(f"the identifier was trained on seed {args.seed}: pick another")
    stack.identifier.temperature = 1.0
    films: list[CalibrationFilm] = []
    log_probs, labels = [], []
    bar, step = films_bar(args.n, "calibration films", args.quiet)
    for index in range(args.n):
        phantom = make_phantom(args.seed, index, size_px=args.render_px, appearance=args.appearance)
        film = phantom_film(phantom)
        references = references_for([body_part_examined(phantom.scene.region)])
        result = stack.read(
            film.image, trace=True, references=references, spacing_mm=film.spacing_mm
        )
        step(1)
        if result.reading is None or result.naming is None:
            continue
        found = match_film([v.mask for v in result.reading.vertebrae], film)
        true_of: list[str | None] = [None] * len(result.reading.vertebrae)
        for i, j, _, _ in found.pairs:
            true_of[i] = film.vertebrae[j].label
        films.append(CalibrationFilm(result.naming, true_of, phantom.case_id))
        prob = result.naming.probabilities
        for i, label in enumerate(true_of):
            if label is not None and i < len(prob):
                log_probs.append(np.log(np.clip(prob[i], 1e-12, 1.0)))
                labels.append(label)
    bar.close()
    temperature = fit_temperature(np.array(log_probs).reshape(-1, 3), labels)
    threshold, sweep = choose_threshold(films, temperature, max_wrong_rate=args.max_wrong)
    chosen = next(s for s in sweep if s["threshold"] == threshold)
    calibration = {
        "temperature": round(temperature, 4),
        "threshold": threshold,
        "criterion": (
            f"the lowest threshold, from {MIN_THRESHOLD}, whose wrong-name rate on the "
            f"calibration films is at most {args.max_wrong}"
        ),
        "data": {
            "source": "phantoms",
            "seed": args.seed,
            "films": args.n,
            "render_px": args.render_px,
            "appearance": args.appearance,
            "header_prior": True,
        },
        "at_threshold": chosen,
        "command": "pacsnode " + " ".join(args.argv),
    }
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(
            json.dumps({"calibration": calibration, "sweep": sweep}, indent=1) + "\n"
        )
    print(
        f"temperature {temperature:.3f}; threshold {threshold:.2f}: identification "
        f"{chosen['identification']:.3f}, wrong-name rate {chosen['wrong_name_rate']:.3f} "
        f"({chosen['wrong']}/{chosen['named']}) on {args.n} films"
    )
    if not args.dry_run:
        path = (models / MODEL_FILES["identifier"]).with_suffix(".json")
        manifest = json.loads(path.read_text())
        manifest["calibration"] = calibration
        path.write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"wrote the calibration into {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:

    from pacsnode.analysis.identify import CONTEXT
    from pacsnode.training.identifier.train import IdentifierConfig, train_identifier

    if args.context is None:
        args.context = CONTEXT
    if args.frames == "corners":
        if args.data != "phantoms":
            raise PacsnodeError("--frames corners needs phantoms: use --frames outline")
        if args.beyond:
            raise PacsnodeError("--beyond needs --frames outline")
    sets, data = _training_sets(args)
    cfg = IdentifierConfig(
        context=args.context,
        width=args.width,
        neighbours=args.neighbours,
        data=data,
        **run_options(args),
    )
    weights = train_identifier(
        cfg,
        sets["train"],
        sets["val"],
        resume=args.resume,
        progress=batch_bar(args.quiet, leave=False),
    )
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def _training_sets(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training and validation patches of ``pacsnode train identifier`` and their
    description for the manifest."""
    from pacsnode.training.identifier.data import film_patches, identifier_patches
    from pacsnode.training.segmenter.data import Jitter

    sets: dict[str, Any] = {}
    data: dict[str, Any] = {"frames": args.frames}
    for part in ("train", "val"):
        if args.frames == "corners":
            if args.train_seed == args.val_seed or TEST_SEED in (args.train_seed, args.val_seed):
                raise PacsnodeError(
                    f"training and validation seeds must differ from each other and from "
                    f"the test seed {TEST_SEED}"
                )
            seed, n = (
                (args.train_seed, args.n_train) if part == "train" else (args.val_seed, args.n_val)
            )
            about: dict[str, Any] = {
                "source": "phantoms",
                "seed": seed,
                "films": n,
                "appearance": args.appearance,
            }
            bar, step = films_bar(n, f"{part} patches", args.quiet)
            sets[part] = identifier_patches(
                seed,
                n,
                render_px=args.render_px,
                jitter=Jitter(),
                context=args.context,
                progress=step,
                appearance=args.appearance,
            )
        else:
            films, about, _ = annotated_films(args, part)
            keys = [
                (about.get("seed", {"train": 1, "val": 2}[part]), i) for i in range(about["films"])
            ]
            bar, step = films_bar(about["films"], f"{part} patches", args.quiet)
            sets[part] = film_patches(
                ((film, None) for film in films()),
                seeds=keys,
                jitter=Jitter(),
                context=args.context,
                beyond=args.beyond,
                progress=step,
            )
        bar.close()
        counts = sets[part].class_counts()
        if part == "train" and not (counts["C2"] or counts["S1"]):
            raise PacsnodeError(
                f"the training films show no whole C2 or S1: the identifier would learn "
                f"nothing ({about})"
            )
        data[part] = {**about, "patches": len(sets[part]), "classes": counts}
    if args.data == "phantoms":
        data["render_px"] = args.render_px
    data["jitter"] = "centre 8 % of the body, axis 6 degrees, size 8 % (standard deviations)"
    data["reversed"] = "every frame also turned 180 degrees, labelled other"
    if args.beyond:
        data["beyond"] = (
            "a frame above each C2 and below each S1, one neighbour step past it, labelled other"
        )
    return sets, data


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pacsnode.analysis.identify import Identifier
    from pacsnode.training.identifier.data import identifier_patches
    from pacsnode.training.identifier.evaluate import (
        markdown_report,
        predict_probabilities,
        score_identifier,
    )
    from pacsnode.training.segmenter.data import Jitter

    path = args.model / "identifier.safetensors" if args.model.is_dir() else args.model
    model = Identifier.load(path)
    data = model.manifest.get("training", {}).get("data", {})
    used = {data.get(part, {}).get("seed") for part in ("train", "val")}
    if args.test_seed in used:
        raise PacsnodeError(
            f"{path} was trained or validated on seed {args.test_seed}: not a test set"
        )
    render_px = int(data.get("render_px") or 800)
    bar, step = films_bar(args.n_test, "test patches", args.quiet)
    # Jittered as in training: the identifier is scored on frames a detector would give.
    patches = identifier_patches(
        args.test_seed,
        args.n_test,
        render_px=render_px,
        jitter=Jitter(),
        context=model.context,
        size=model.size,
        frames=str(data.get("frames", "corners")),
        progress=step,
    )
    bar.close()
    scores = score_identifier(
        patches, predict_probabilities(model.network, patches.images, model.device)
    )
    scores["model"] = {
        "file": str(path),
        "name": model.manifest.get("name"),
        "version": model.version,
        "sha256": model.manifest.get("sha256"),
        "context": model.context,
    }
    scores["data"] = {
        "source": "phantoms, mixed regions",
        "seed": args.test_seed,
        "films": args.n_test,
        "render_px": render_px,
        "jitter": "as in training",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(scores, indent=1) + "\n")
    title = (
        f"Identifier {model.version} on {len(patches)} patches of {args.n_test} held-out "
        f"phantoms (seed {args.test_seed})"
    )
    markdown = markdown_report(scores, title)
    Path(f"{args.out}.md").write_text(markdown)
    print(markdown)
    return 0
