"""The ``pacsnode`` command: argument parsing and dispatch to one function per command.

Heavy modules (numpy, the phantom generator, later torch) are imported inside the command
that needs them, so ``pacsnode --help`` and the admin commands start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pacsnode import __version__
from pacsnode.errors import PacsnodeError

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _int_at_least(minimum: int) -> Callable[[str], int]:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pacsnode",
        description="DICOM node that reads lateral spine radiographs.",
    )
    parser.add_argument("--version", action="version", version=f"pacsnode {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ph = sub.add_parser(
        "phantom",
        help="generate synthetic lateral spine films with exact ground truth",
        description=(
            "Write N synthetic lateral spine radiographs as DICOM DX files, each with a "
            "ground-truth JSON (vertebra outlines, corners, heights, Genant grades) and a "
            "PNG preview. The same --seed always gives the same cases."
        ),
    )
    ph.add_argument("--n", type=_int_at_least(1), required=True, help="number of cases")
    ph.add_argument("--seed", type=_int_at_least(0), required=True, help="phantom set seed")
    ph.add_argument(
        "--region",
        choices=["cervical", "lumbar", "chest", "mixed"],
        default="mixed",
        help="anatomy shown (default: mixed, drawn per case)",
    )
    ph.add_argument("--out", type=Path, required=True, help="output directory")
    ph.add_argument(
        "--start", type=_int_at_least(0), default=0, help="index of the first case (default 0)"
    )
    ph.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    ph.add_argument("--quiet", action="store_true", help="no progress bar")
    ph.set_defaults(func=_cmd_phantom)
    return parser


def _cmd_phantom(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.training.phantom import make_phantom, write_phantom

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise PacsnodeError(f"--out {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PacsnodeError(f"cannot create output directory {out}: {exc.strerror}") from exc
    started = time.perf_counter()
    indices = range(args.start, args.start + args.n)
    written = []
    bar = tqdm(indices, desc="phantoms", unit="film", disable=args.quiet, file=sys.stderr)
    for index in bar:
        phantom = make_phantom(args.seed, index, args.region)
        try:
            paths = write_phantom(phantom, out, preview=not args.no_preview)
        except OSError as exc:
            raise PacsnodeError(f"cannot write case {phantom.case_id} to {out}: {exc}") from exc
        written.append(
            {
                "case_id": phantom.case_id,
                "region": phantom.scene.region,
                "vertebrae": len(phantom.truth["vertebrae"]),
                **{k: str(v) for k, v in paths.items()},
            }
        )
        bar.set_postfix_str(f"{phantom.case_id} {phantom.scene.region}")
    elapsed = time.perf_counter() - started
    manifest = {
        "seed": args.seed,
        "start": args.start,
        "n": args.n,
        "region": args.region,
        "cases": written,
    }
    (out / f"phantoms-seed{args.seed}.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {args.n} cases to {out} in {elapsed:.1f} s ({args.n / elapsed:.2f} films/s)")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PacsnodeError as exc:
        print(f"pacsnode {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"pacsnode {args.command}: interrupted", file=sys.stderr)
        return 130
