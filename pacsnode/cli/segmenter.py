"""``pacsnode train segmenter`` and ``pacsnode evaluate segmenter``: the shape-aware patch
segmenter, UNet and UNet-S, on phantom vertebra patches."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pacsnode.cli._args import add_run_arguments, batch_bar, films_bar, int_at_least, run_options
from pacsnode.errors import PacsnodeError

__all__ = ["add_segmenter_commands"]

# Seeds of the localiser's sets, reused so no seed means two things: training 1000,
# validation 2000, test 9000 (never trained or tuned on).
TRAIN_SEED, VAL_SEED, TEST_SEED = 1000, 2000, 9000


def add_segmenter_commands(model_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the commands; ``model_parser(verb, verb_help, help, description, model=)``
    gives the parser of ``pacsnode VERB MODEL``."""
    tr = model_parser(
        "train",
        "train a network of the analysis stack",
        "the vertebra patch segmenter (shape-aware loss paper)",
        (
            "Train the 64 x 64 patch UNet on phantom vertebra patches, with log loss alone "
            "(UNet) or with the shape-aware term (UNet-S, --shape-aware). Checkpoints after "
            "every epoch (--resume continues); writes segmenter.safetensors and its manifest "
            "in --out."
        ),
        model="segmenter",
    )
    tr.add_argument("--shape-aware", action="store_true", help="add the shape-aware term (-S)")
    tr.add_argument("--shape-weight", type=float, default=1.0, help="weight of the term (1)")
    tr.add_argument(
        "--data",
        default="phantoms",
        help="'phantoms' (default) or a folder of annotated films (outline JSON, label "
        "masks or landmark CSVs beside DICOM or PNG images)",
    )
    tr.add_argument("--val-data", type=Path, help="folder of validation films (with --data DIR)")
    tr.add_argument(
        "--frames",
        choices=["corners", "outline"],
        default="corners",
        help="phantom patch frames sized from the body's corners and heights (corners, the "
        "UNet against UNet-S experiment) or from the outline's extent along and across "
        "the spine (outline: what the detector learns and the node gives the segmenter)",
    )
    tr.add_argument(
        "--reference-repeat",
        type=int_at_least(1),
        default=1,
        help="draw each C2 and S1 training patch this many times per epoch (1): the "
        "references are rare and unlike their neighbours (C2's dens, the sacrum)",
    )
    tr.add_argument("--train-seed", type=int_at_least(0), default=TRAIN_SEED)
    tr.add_argument("--n-train", type=int_at_least(1), default=300, help="phantom films (300)")
    tr.add_argument("--val-seed", type=int_at_least(0), default=VAL_SEED)
    tr.add_argument("--n-val", type=int_at_least(1), default=40, help="phantom films (40)")
    tr.add_argument("--render-px", type=int_at_least(200), default=800, help="film long side")
    tr.add_argument("--width", type=int_at_least(1), default=16, help="first-level channels")
    add_run_arguments(tr, epochs=20, batch_size=32, lr=1e-3)
    tr.set_defaults(func=_cmd_train)

    ev = model_parser(
        "evaluate",
        "measure trained networks on held-out films",
        "UNet against UNet-S on held-out vertebra patches",
        (
            "Score patch segmenters on vertebra patches of held-out phantoms (a seed none of "
            "them was trained or validated on): pixel accuracy, Dice, point-to-curve error "
            "and fit failure, with paired t-tests; writes PREFIX.json and PREFIX.md."
        ),
        model="segmenter",
    )
    ev.add_argument("models", nargs="+", type=Path, help="run folders or .safetensors files")
    ev.add_argument("--test-seed", type=int_at_least(0), default=TEST_SEED)
    ev.add_argument("--n-test", type=int_at_least(1), default=100, help="phantom films (100)")
    ev.add_argument("--out", type=Path, required=True, help="output prefix")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=_cmd_evaluate)


def _cmd_train(args: argparse.Namespace) -> int:
    from pacsnode.training.segmenter.data import Jitter, phantom_patches

    if args.data != "phantoms":
        return _train_on_folder(args)
    if args.frames == "outline":
        return _train_on_outline_frames(args)
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
        sets[name] = phantom_patches(
            seed,
            n,
            render_px=args.render_px,
            jitter=Jitter(),
            progress=step,
            appearance=args.appearance,
        )
        bar.close()
    return _train(
        args,
        sets,
        {
            "source": "phantoms",
            "train": {
                "seed": args.train_seed,
                "films": args.n_train,
                "patches": len(sets["train"]),
            },
            "val": {"seed": args.val_seed, "films": args.n_val, "patches": len(sets["val"])},
            "render_px": args.render_px,
            "jitter": "centre 8 % of the body, axis 6 degrees, size 8 % (standard deviations)",
        },
    )


def _train_on_outline_frames(args: argparse.Namespace) -> int:
    from pacsnode.training.annotations import phantom_film
    from pacsnode.training.phantom import make_phantom
    from pacsnode.training.segmenter.data import Jitter, folder_patches

    if args.train_seed == args.val_seed or TEST_SEED in (args.train_seed, args.val_seed):
        raise PacsnodeError(
            f"training and validation seeds must differ from each other and from the test "
            f"seed {TEST_SEED}"
        )
    sets, data = {}, {"source": "phantoms", "frames": "outline extent"}
    for name, seed, n in (
        ("train", args.train_seed, args.n_train),
        ("val", args.val_seed, args.n_val),
    ):
        bar, step = films_bar(n, f"{name} patches", args.quiet)
        films = (
            phantom_film(make_phantom(seed, i, size_px=args.render_px, appearance=args.appearance))
            for i in range(n)
        )
        sets[name] = folder_patches(list(films), jitter=Jitter(), seed=seed, progress=step)
        bar.close()
        data[name] = {"seed": seed, "films": n, "patches": len(sets[name])}
    data["appearance"] = args.appearance
    data["render_px"] = args.render_px
    data["jitter"] = "centre 8 % of the body, axis 6 degrees, size 8 % (standard deviations)"
    return _train(args, sets, data)


def _train_on_folder(args: argparse.Namespace) -> int:
    from pacsnode.training.annotations import read_folder
    from pacsnode.training.segmenter.data import Jitter, folder_patches

    if args.val_data is None:
        raise PacsnodeError("--data DIR needs --val-data DIR: a folder of validation films")
    sets, data = {}, {"source": "folder"}
    for name, folder in (("train", Path(args.data)), ("val", args.val_data)):
        films = read_folder(folder)
        sets[name] = folder_patches(films, jitter=Jitter(), seed={"train": 1, "val": 2}[name])
        data[name] = {"folder": str(folder), "films": len(films), "patches": len(sets[name])}
    data["jitter"] = "centre 8 % of the body, axis 6 degrees, size 8 % (standard deviations)"
    return _train(args, sets, data)


def _train(args: argparse.Namespace, sets: dict[str, Any], data: dict[str, Any]) -> int:
    from pacsnode.analysis.naming import REFERENCES
    from pacsnode.training.segmenter.data import repeat_labels
    from pacsnode.training.segmenter.train import SegmenterConfig, train_segmenter

    if args.reference_repeat > 1:
        sets = {**sets, "train": repeat_labels(sets["train"], REFERENCES, args.reference_repeat)}
        data = {
            **data,
            "reference_repeat": args.reference_repeat,
            "train_draws": len(sets["train"]),
        }

    cfg = SegmenterConfig(
        shape_aware=args.shape_aware,
        shape_weight=args.shape_weight,
        width=args.width,
        data=data,
        **run_options(args),
    )
    weights = train_segmenter(
        cfg, sets["train"], sets["val"], resume=args.resume, progress=batch_bar(args.quiet)
    )
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pacsnode.training.segmenter.data import Jitter, phantom_patches
    from pacsnode.training.segmenter.evaluate import (
        LoadedSegmenter,
        compare,
        markdown_table,
        score_segmenter,
    )

    models = [LoadedSegmenter.load(path) for path in args.models]
    render_px = None
    for model in models:
        data = model.manifest.get("training", {}).get("data", {})
        used = {data.get(part, {}).get("seed") for part in ("train", "val")}
        if args.test_seed in used:
            raise PacsnodeError(
                f"{model.name} was trained or validated on seed {args.test_seed}: not a test set"
            )
        render_px = render_px or data.get("render_px")
    bar, step = films_bar(args.n_test, "test patches", args.quiet)
    # Jittered as in training: the segmenter is scored on frames a detector would give.
    patches = phantom_patches(
        args.test_seed, args.n_test, render_px=render_px or 800, jitter=Jitter(), progress=step
    )
    bar.close()
    scores = {model.name: score_segmenter(model, patches) for model in models}
    table = compare(scores)
    table["data"] = {
        "seed": args.test_seed,
        "films": args.n_test,
        "patches": len(patches),
        "render_px": render_px or 800,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(table, indent=1, default=float) + "\n")
    title = (
        f"Patch segmenter on {len(patches)} vertebra patches of {args.n_test} held-out "
        f"phantoms (seed {args.test_seed})"
    )
    markdown = markdown_table(table, title)
    Path(f"{args.out}.md").write_text(markdown)
    print(markdown)
    return 0
