"""``pacsnode train identifier`` and ``pacsnode evaluate identifier``: the network that
recognises the reference vertebrae C2 and S1, on phantom vertebra patches."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pacsnode.cli._args import add_run_arguments, films_bar, int_at_least
from pacsnode.cli.segmenter import TEST_SEED, TRAIN_SEED, VAL_SEED
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
            "phantom vertebra patches, C2 and S1 turned upside down counting as other. "
            "Checkpoints after every epoch (--resume continues); writes "
            "identifier.safetensors and its manifest in --out."
        ),
        model="identifier",
    )
    tr.add_argument("--train-seed", type=int_at_least(0), default=TRAIN_SEED)
    tr.add_argument("--n-train", type=int_at_least(1), default=300, help="phantom films (300)")
    tr.add_argument("--val-seed", type=int_at_least(0), default=VAL_SEED)
    tr.add_argument("--n-val", type=int_at_least(1), default=40, help="phantom films (40)")
    tr.add_argument("--render-px", type=int_at_least(200), default=800, help="film long side")
    tr.add_argument(
        "--frames",
        choices=["corners", "outline"],
        default="corners",
        help="patch frames sized by the body's corners and heights, or by the outline's "
        "extent along and across the spine (outline: as the stack frames vertebrae)",
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


def _cmd_train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.analysis.identify import CONTEXT
    from pacsnode.training.identifier.data import identifier_patches
    from pacsnode.training.identifier.train import IdentifierConfig, train_identifier
    from pacsnode.training.segmenter.data import Jitter

    if args.context is None:
        args.context = CONTEXT

    if args.train_seed == args.val_seed or TEST_SEED in (args.train_seed, args.val_seed):
        raise PacsnodeError(
            f"training and validation seeds must differ from each other and from the test "
            f"seed {TEST_SEED}"
        )
    sets = {}
    for name, seed, n in (
        ("train", args.train_seed, args.n_train),
        ("val", args.val_seed, args.n_val),
    ):
        bar, step = films_bar(n, f"{name} patches", args.quiet)
        sets[name] = identifier_patches(
            seed,
            n,
            render_px=args.render_px,
            jitter=Jitter(),
            context=args.context,
            frames=args.frames,
            progress=step,
        )
        bar.close()
    cfg = IdentifierConfig(
        out=args.out,
        context=args.context,
        width=args.width,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        data={
            "source": "phantoms, mixed regions",
            "frames": args.frames,
            "train": {
                "seed": args.train_seed,
                "films": args.n_train,
                "patches": len(sets["train"]),
                "classes": sets["train"].class_counts(),
            },
            "val": {
                "seed": args.val_seed,
                "films": args.n_val,
                "patches": len(sets["val"]),
                "classes": sets["val"].class_counts(),
            },
            "render_px": args.render_px,
            "jitter": "centre 8 % of the body, axis 6 degrees, size 8 % (standard deviations)",
            "reversed": "every frame also turned 180 degrees, labelled other",
        },
        command="pacsnode " + " ".join(args.argv),
    )

    def progress(total: int, desc: str):
        return tqdm(
            total=total, desc=desc, unit="batch", disable=args.quiet, file=sys.stderr, leave=False
        )

    weights = train_identifier(
        cfg, sets["train"], sets["val"], resume=args.resume, progress=progress
    )
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


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
