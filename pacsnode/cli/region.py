"""``pacsnode train detector`` and ``pacsnode train semantic``: the two networks that look
at the localised spine region, trained on phantoms or on a folder of annotated films."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pacsnode.cli._args import add_run_arguments, batch_bar, films_bar, int_at_least, run_options
from pacsnode.cli.segmenter import TEST_SEED, TRAIN_SEED, VAL_SEED
from pacsnode.errors import PacsnodeError

__all__ = ["add_orienter_command", "add_region_commands", "annotated_films"]

_ABOUT = {
    "detector": (
        "the vertebra detector (centres and sizes) of the instance path",
        "Train the UNet that finds each vertebral body's centre (a heatmap, CenterNet's "
        "focal loss) and its size in the localised spine region.",
    ),
    "semantic": (
        "the whole-spine semantic UNet (Dice + BCE, thoracic UNet paper)",
        "Train the UNet that segments every vertebral body in the localised spine region at "
        "once, with Dice loss plus binary cross-entropy, on CLAHE-normalised regions.",
    ),
}


def add_region_commands(model_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``train detector`` and ``train semantic``."""
    for kind, (help_, description) in _ABOUT.items():
        tr = model_parser(
            "train",
            "train a network of the analysis stack",
            help_,
            description + " Checkpoints after every epoch (--resume continues); writes "
            f"{kind}.safetensors and its manifest in --out.",
            model=kind,
        )
        add_data_arguments(tr)
        tr.add_argument("--frames", type=int_at_least(1), default=3, help="frames per film (3)")
        tr.add_argument("--width", type=int_at_least(1), default=12 if kind == "semantic" else 8)
        add_run_arguments(tr, epochs=12, batch_size=8, lr=1e-3)
        tr.set_defaults(func=_cmd_train, kind=kind)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data phantoms|DIR with the phantom seeds and counts, and a validation folder."""
    parser.add_argument(
        "--data",
        default="phantoms",
        help="'phantoms' (default) or a folder of annotated films (outline JSON, label "
        "masks or landmark CSVs beside DICOM or PNG images)",
    )
    parser.add_argument(
        "--val-data", type=Path, help="folder of validation films (with --data DIR)"
    )
    parser.add_argument("--train-seed", type=int_at_least(0), default=TRAIN_SEED)
    parser.add_argument("--n-train", type=int_at_least(1), default=300, help="phantoms (300)")
    parser.add_argument("--val-seed", type=int_at_least(0), default=VAL_SEED)
    parser.add_argument("--n-val", type=int_at_least(1), default=40, help="phantoms (40)")
    parser.add_argument("--render-px", type=int_at_least(200), default=800, help="film long side")


def annotated_films(
    args: argparse.Namespace, part: str
) -> tuple[Callable[[], Iterator[Any]], dict[str, Any], str]:
    """The films of ``part`` ("train" or "val") as a generator factory, their description
    for the manifest, and a cache key."""
    from pacsnode.training.annotations import phantom_film, read_folder
    from pacsnode.training.phantom import make_phantom

    if args.data == "phantoms":
        if args.train_seed == args.val_seed or TEST_SEED in (args.train_seed, args.val_seed):
            raise PacsnodeError(
                f"training and validation seeds must differ from each other and from the "
                f"test seed {TEST_SEED}"
            )
        seed, n = (
            (args.train_seed, args.n_train) if part == "train" else (args.val_seed, args.n_val)
        )

        def phantoms() -> Iterator[Any]:
            for index in range(n):
                yield phantom_film(
                    make_phantom(seed, index, size_px=args.render_px, appearance=look)
                )

        look = getattr(args, "appearance", "classic")
        about = {
            "source": "phantoms",
            "seed": seed,
            "films": n,
            "render_px": args.render_px,
            "appearance": look,
        }
        suffix = "" if look == "classic" else f"-{look}"
        return phantoms, about, f"phantoms-s{seed}-n{n}-r{args.render_px}{suffix}"
    folder = Path(args.data) if part == "train" else args.val_data
    if folder is None:
        raise PacsnodeError("--data DIR needs --val-data DIR: a folder of validation films")
    films = read_folder(folder)
    about = {"source": str(folder), "films": len(films)}
    return (lambda: iter(films)), about, None


def _cmd_train(args: argparse.Namespace) -> int:

    from pacsnode.training.region.data import RegionJitter, region_set
    from pacsnode.training.region.train import RegionConfig, train_region_network

    sets, about = {}, {}
    for part, frames in (("train", args.frames), ("val", 1)):
        films, about[part], key = annotated_films(args, part)
        bar, step = films_bar(about[part]["films"], f"{part} regions", args.quiet)
        sets[part] = region_set(
            films,
            name=key or "folder",
            frames_per_film=frames,
            seed={"train": 11, "val": 12}[part],
            jitter=RegionJitter(),
            cache=key is not None,
            progress=step,
        )
        bar.close()
        about[part]["samples"] = len(sets[part])
    cfg = RegionConfig(
        kind=args.kind,
        width=args.width,
        data={
            **about,
            "frames_per_film": args.frames,
            "jitter": "frame centre 4 % of the box, 4 degrees, size 8 %; head end reversed "
            "in half the frames",
        },
        **run_options(args),
    )
    weights = train_region_network(
        cfg, sets["train"], sets["val"], resume=args.resume, progress=batch_bar(args.quiet)
    )
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def add_orienter_command(model_parser: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``train orienter``."""
    tr = model_parser(
        "train",
        "train a network of the analysis stack",
        "the orienter: which way each vertebra faces (head end, front side)",
        "Train the patch classifier that tells, around each detected vertebra, whether the "
        "frame's axis runs from the head to the tail and on which side the patient's front "
        "is. Writes orienter.safetensors and its manifest in --out.",
        model="orienter",
    )
    add_data_arguments(tr)
    tr.add_argument("--width", type=int_at_least(1), default=8)
    add_run_arguments(tr, epochs=10, batch_size=64, lr=2e-3, device=None)
    tr.set_defaults(func=_cmd_train_orienter)


def _cmd_train_orienter(args: argparse.Namespace) -> int:
    from pacsnode.training.orienter import OrienterConfig, orienter_set, train_orienter

    sets, about = {}, {}
    for part in ("train", "val"):
        films, about[part], _ = annotated_films(args, part)
        bar, step = films_bar(about[part]["films"], f"{part} patches", args.quiet)
        sets[part] = orienter_set(films(), seed={"train": 21, "val": 22}[part], progress=step)
        bar.close()
        about[part]["patches"] = len(sets[part])
    cfg = OrienterConfig(
        width=args.width,
        data={**about, "jitter": "as the segmenter's; turned and mirrored at random"},
        **run_options(args),
    )
    weights = train_orienter(cfg, sets["train"], sets["val"], resume=args.resume)
    print(f"wrote {weights} and {weights.with_suffix('.json')}")
    return 0
