"""argparse value types shared by the ``pacsnode`` commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "add_run_arguments",
    "batch_bar",
    "config_parent",
    "films_bar",
    "int_at_least",
    "run_options",
    "training_appearance",
]


def config_parent() -> argparse.ArgumentParser:
    """A parent parser with the ``--config`` option of every command that reads the node's
    settings."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="the node's TOML file (default: the embedded defaults); PACSNODE_* "
        "environment variables override it",
    )
    return config


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def training_appearance(text: str) -> str:
    """An argparse type: an appearance phantoms may be trained, validated or tuned on."""
    from pacsnode.training.phantom.appearance import (
        HELD_OUT_FAMILIES,
        RANDOMISED,
        TRAINING_FAMILIES,
    )

    if text in HELD_OUT_FAMILIES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is held out for the out-of-family test tier: never train or tune on it"
        )
    if text != RANDOMISED and text not in TRAINING_FAMILIES:
        raise argparse.ArgumentTypeError(
            f"unknown appearance {text!r}; expected {RANDOMISED!r} or one of {TRAINING_FAMILIES}"
        )
    return text


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimiser: str = "Adam",
    lr_type: Callable[[str], float] = float,
    device: str | None = "cpu",
) -> None:
    """The options every training command shares: the schedule (--epochs, --batch-size,
    --lr), --seed, --threads, --device (left out when ``device`` is None), the run folder
    --out, --resume and --quiet."""
    parser.add_argument("--epochs", type=int_at_least(1), default=epochs)
    parser.add_argument("--batch-size", type=int_at_least(1), default=batch_size)
    parser.add_argument(
        "--lr", type=lr_type, default=lr, help=f"{optimiser} learning rate ({lr:g})"
    )
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="initialisation seed")
    parser.add_argument("--threads", type=int_at_least(1), help="torch CPU threads")
    if device is not None:
        choices = "auto, cpu or cuda[:N]" if device == "auto" else "cpu or cuda[:N]"
        parser.add_argument("--device", default=device, help=choices)
    parser.add_argument(
        "--appearance",
        type=training_appearance,
        default="randomised",
        help=(
            "phantom appearance: 'randomised' (default: one training family per film), "
            "'classic' or one training family; the held-out families are refused"
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def films_bar(total: int, desc: str, quiet: bool) -> tuple[Any, Callable[[int], Any]]:
    """A progress bar over films on stderr, and the step to call after each film."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="film", disable=quiet, file=sys.stderr)
    return bar, (lambda n: bar.update(n))


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training configs' fields that :func:`add_run_arguments` options give (--device
    only where the command has it), and the command line as typed, for the manifest."""
    options = {
        "out": args.out,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "command": "pacsnode " + " ".join(args.argv),
    }
    if hasattr(args, "device"):
        options["device"] = args.device
    return options


def batch_bar(quiet: bool, *, leave: bool = True) -> Callable[..., Any]:
    """A factory of progress bars over batches on stderr, ``(total=, desc=)``, as the
    training loops call it."""
    from tqdm import tqdm

    def bar(total: int, desc: str) -> Any:
        return tqdm(
            total=total, desc=desc, unit="batch", disable=quiet, file=sys.stderr, leave=leave
        )

    return bar
