"""The ``pacsnode`` command: argument parsing and dispatch to one function per command.

Heavy modules (numpy, the phantom generator, later torch) are imported inside the command
that needs them, so ``pacsnode --help`` and the admin commands start fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pacsnode import __version__
from pacsnode.cli._args import add_run_arguments, batch_bar, int_at_least, run_options
from pacsnode.cli.admin import add_admin_commands
from pacsnode.cli.db import add_db_commands
from pacsnode.cli.identifier import add_identifier_commands
from pacsnode.cli.region import add_orienter_command, add_region_commands
from pacsnode.cli.segmenter import add_segmenter_commands
from pacsnode.cli.serve import add_serve_command
from pacsnode.cli.stack import add_stack_commands
from pacsnode.errors import ExportError, PacsnodeError

if TYPE_CHECKING:
    from pacsnode.imaging import FilmHeader, PixelSpacing

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


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
    ph.add_argument("--n", type=int_at_least(1), required=True, help="number of cases")
    ph.add_argument("--seed", type=int_at_least(0), required=True, help="phantom set seed")
    ph.add_argument(
        "--region",
        choices=["cervical", "lumbar", "chest", "mixed"],
        default="mixed",
        help="anatomy shown (default: mixed, drawn per case)",
    )
    ph.add_argument("--out", type=Path, required=True, help="output directory")
    ph.add_argument(
        "--start", type=int_at_least(0), default=0, help="index of the first case (default 0)"
    )
    ph.add_argument(
        "--appearance",
        help=(
            "appearance family: classic (the 2-D renderer's default), flat, enhanced, "
            "cr-grid, export, the held-out scanned (for test sets only), or randomised (a "
            "training family per film); with --renderer drr also drr, that renderer's own "
            "held-out processing (its default)"
        ),
    )
    ph.add_argument(
        "--size-px",
        type=int_at_least(200),
        help="render with the film's long side at this many pixels (default: the "
        "detector's pitch); training reduces films to 800 px anyway",
    )
    ph.add_argument(
        "--renderer",
        choices=["phantom", "drr"],
        default="phantom",
        help=(
            "phantom (default): the 2-D physical model; drr: a 3-D spine projected by a cone "
            "beam, with a detector chain of its own"
        ),
    )
    ph.add_argument("--no-preview", action="store_true", help="skip the PNG previews")
    ph.add_argument("--quiet", action="store_true", help="no progress bar")
    ph.set_defaults(func=_cmd_phantom)
    _add_train(sub)
    _add_evaluate(sub)
    _add_calibrate(sub)
    add_segmenter_commands(functools.partial(_model_parser, sub))
    add_region_commands(functools.partial(_model_parser, sub))
    add_orienter_command(functools.partial(_model_parser, sub))
    add_identifier_commands(functools.partial(_model_parser, sub))
    add_stack_commands(functools.partial(_model_parser, sub))
    add_serve_command(sub)
    add_admin_commands(sub)
    add_db_commands(sub)
    an = sub.add_parser(
        "analyze",
        help="analyse films offline: write the SEG, SR, GSPS, a burned-in capture and a PNG",
        description=(
            "Run the analysis stack on DICOM films, or on PNG and JPEG pictures of films, "
            "without any network and write, per film, <SOPInstanceUID>.seg.dcm, "
            "<SOPInstanceUID>.sr.dcm, <SOPInstanceUID>.pr.dcm (the presentation state), "
            "<SOPInstanceUID>.sc.dcm (the burned-in Secondary Capture, not for diagnosis) "
            "and <SOPInstanceUID>.png in --out. A picture (8- or "
            "16-bit grey, or RGB with equal channels) is first wrapped as a Secondary "
            "Capture film, written there as <SOPInstanceUID>.dcm for the SEG and SR to "
            "refer to; it has no pixel spacing, so its measurements are in pixels. A film "
            "that cannot be analysed is reported and the others go on; the exit status is 1 "
            "if any failed."
        ),
    )
    an.add_argument("files", nargs="+", type=Path, help="DICOM films, PNG or JPEG pictures")
    an.add_argument("--out", type=Path, required=True, help="output directory")
    an.add_argument("--models-dir", type=Path, help="weights folder (default: the shipped)")
    an.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    an.set_defaults(func=_cmd_analyze)
    return parser


def _cmd_analyze(args: argparse.Namespace) -> int:
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    from pacsnode.analysis.stack import Stack
    from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
    from pacsnode.export.overlay import render_overlay_png
    from pacsnode.export.results import algorithm_of, build_results
    from pacsnode.imaging import read_film
    from pacsnode.imaging.import_picture import picture_format, wrap_picture
    from pacsnode.worker.analyst import RESULT_FILE_NAMES, describe, reading_hints

    models = args.models_dir or DEFAULT_MODELS_DIR
    stack = Stack.load(models, device=args.device)
    algorithm = algorithm_of(stack.localiser.manifest)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PacsnodeError(f"cannot create output directory {args.out}: {exc.strerror}") from exc
    failed = 0
    for path in args.files:
        try:
            data = path.read_bytes()  # once: the reader and the header parse share it
            picture = picture_format(data)
            if picture is not None:
                buffer = io.BytesIO()
                wrap_picture(data, path.name).save_as(buffer, enforce_file_format=True)
                data = buffer.getvalue()
            film = read_film(data)
            # A UID is full of dots: build names whole, never with Path.with_suffix.
            stem = str(args.out / _checked_film_uids(film))
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            result = stack.read(film.image, **reading_hints(header, film))
            found, reading = result.localisation, result.reading
            render_overlay_png(film.image, found, stem + ".png", reading=reading)
            results = build_results(header, film, found, algorithm, reading, secondary_capture=True)
            if picture is not None:
                Path(stem + ".dcm").write_bytes(data)
            for kind, dataset in results.by_kind().items():
                dataset.save_as(f"{stem}.{RESULT_FILE_NAMES[kind]}", enforce_file_format=True)
        except (PacsnodeError, InvalidDicomError, OSError) as exc:
            failed += 1
            print(f"{path}: not analysed: {exc}", file=sys.stderr)
            continue
        assert reading is not None  # build_results refused a film without a spine
        wrapped = f" (the {picture} wrapped as {stem}.dcm)" if picture is not None else ""
        print(
            f"{path}: {describe(reading)}; {_units(film.spacing)} -> "
            f"{stem}.seg.dcm, .sr.dcm, .pr.dcm, .sc.dcm, .png{wrapped}"
        )
    return EXIT_ERROR if failed else EXIT_OK


def _checked_film_uids(film: FilmHeader) -> str:
    """The film's SOP Instance UID, once it and the other UIDs the results copy follow the
    DICOM UID grammar: the UID becomes a file name, and must not be a path."""
    from pacsnode.export.uids import is_valid_uid

    for name, value in (
        ("SOP Instance UID", film.sop_instance_uid),
        ("SOP Class UID", film.sop_class_uid),
        ("Study Instance UID", film.study_instance_uid),
        ("Series Instance UID", film.series_instance_uid),
    ):
        if not value:
            raise ExportError(f"the film has no {name}; no result can refer to it")
        if not is_valid_uid(value):
            shown = repr(value if len(value) <= 80 else value[:77] + "...")
            raise ExportError(
                f"the film's {name} {shown} is not a valid DICOM UID (digits and dots, at "
                "most 64 characters); refusing to name files after it or copy it"
            )
    return film.sop_instance_uid


def _units(spacing: PixelSpacing) -> str:
    """How the SR measures lengths and areas on a film of this spacing."""
    if spacing.unit == "px":
        return "measurements in pixels (no pixel spacing)"
    return f"measurements in mm ({spacing.basis.value} spacing)"


def _model_parser(
    sub: argparse._SubParsersAction,
    verb: str,
    verb_help: str,
    help: str,
    description: str,
    model: str = "localiser",
) -> argparse.ArgumentParser:
    """The parser of ``pacsnode VERB MODEL``; the VERB parser is made on first use."""
    verbs: dict[str, argparse._SubParsersAction] = sub.__dict__.setdefault("_pacsnode_verbs", {})
    if verb not in verbs:
        parent = sub.add_parser(verb, help=verb_help)
        verbs[verb] = parent.add_subparsers(dest="model", metavar="MODEL")
        verbs[verb].required = True
    return verbs[verb].add_parser(model, help=help, description=description)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    lo = _model_parser(
        sub,
        "calibrate",
        "choose operating thresholds on validation films",
        "the localiser's probability threshold",
        (
            "Sweep the probability threshold (0.10 to 0.90) of each localiser on full-"
            "resolution validation films (the phantom validation seed of its manifest, or "
            "--data DIR), keep the one with the best mean sensitivity + specificity of the "
            "node's output, and write it into the manifest."
        ),
    )
    lo.add_argument("models", nargs="+", type=Path, help="run folders or .safetensors files")
    lo.add_argument("--data", default="phantoms", help="'phantoms' (default) or a folder")
    lo.add_argument("--n", type=int_at_least(1), default=60, help="validation phantoms (60)")
    lo.add_argument("--workers", type=int_at_least(1), default=1, help="phantom processes")
    lo.add_argument("--quiet", action="store_true", help="no progress bar")
    lo.set_defaults(func=_cmd_calibrate_localiser)


def _add_train(sub: argparse._SubParsersAction) -> None:
    lo = _model_parser(
        sub,
        "train",
        "train a network of the analysis stack",
        "the low-resolution spine localiser (region-aware loss paper)",
        (
            "Train a spine localiser on phantoms or on a folder of annotated films. Writes "
            "checkpoints after every epoch (--resume continues), and at the end "
            "localiser.safetensors with its manifest localiser.json in --out."
        ),
    )
    lo.add_argument("--arch", choices=["fcn", "deconvnet", "unet"], required=True)
    lo.add_argument(
        "--region-aware", action="store_true", help="add the region-aware term (the -R variant)"
    )
    lo.add_argument("--region-weight", type=float, default=1.0, help="weight of the term (1)")
    lo.add_argument(
        "--data",
        default="phantoms",
        help="'phantoms' (default) or a folder of films with <name>.json outlines or "
        "<name>.mask.png masks",
    )
    lo.add_argument("--val-data", type=Path, help="validation folder (with --data DIR)")
    lo.add_argument("--train-seed", type=int_at_least(0), default=1000, help="phantom seed")
    lo.add_argument("--n-train", type=int_at_least(10), default=2000, help="phantom films")
    lo.add_argument("--val-seed", type=int_at_least(0), default=2000, help="phantom seed")
    lo.add_argument("--n-val", type=int_at_least(1), default=100, help="phantom films")
    lo.add_argument(
        "--render-px",
        type=int_at_least(100),
        default=320,
        help="long side phantoms are rendered at before resizing (320)",
    )
    lo.add_argument("--size", type=int_at_least(8), default=100, help="low-res side (100)")
    lo.add_argument("--width", type=int_at_least(1), help="channels of the first level")
    lo.add_argument("--depth", type=int_at_least(1), help="UNet poolings")
    lo.add_argument("--workers", type=int_at_least(1), default=1, help="phantom processes")
    add_run_arguments(lo, epochs=30, batch_size=10, lr=2e-3, optimiser="RMSprop", device="auto")
    lo.set_defaults(func=_cmd_train_localiser)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    lo = _model_parser(
        sub,
        "evaluate",
        "measure trained networks on held-out films",
        "Table 1 of the localisation paper for one or more localisers",
        (
            "Score localisers on held-out phantoms (seeds disjoint from training, checked "
            "against each manifest) or on a folder of annotated films, and write the table "
            "as JSON and Markdown."
        ),
    )
    lo.add_argument(
        "models",
        nargs="+",
        type=Path,
        help="run folders or .safetensors files; names come from the manifests",
    )
    lo.add_argument("--data", default="phantoms", help="'phantoms' (default) or a folder")
    lo.add_argument("--test-seed", type=int_at_least(0), default=9000)
    lo.add_argument("--n-test", type=int_at_least(2), default=100)
    lo.add_argument("--workers", type=int_at_least(1), default=1, help="phantom processes")
    lo.add_argument(
        "--out", type=Path, required=True, help="output prefix: writes PREFIX.json and PREFIX.md"
    )
    lo.add_argument(
        "--record",
        action="store_true",
        help="write the figures (and a regression subset) into each manifest",
    )
    lo.add_argument(
        "--regression-n",
        type=int_at_least(2),
        default=6,
        help="films of the regression subset recorded with --record (6)",
    )
    lo.add_argument("--quiet", action="store_true", help="no progress bar")
    lo.set_defaults(func=_cmd_evaluate_localiser)


def _cmd_phantom(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.training.phantom import make_drr_phantom, make_phantom, write_phantom
    from pacsnode.training.phantom.appearance import ALL_FAMILIES, RANDOMISED
    from pacsnode.training.phantom.drr import NATIVE

    native = NATIVE if args.renderer == "drr" else "classic"
    appearance = args.appearance or native
    allowed = (RANDOMISED, *ALL_FAMILIES, *((NATIVE,) if args.renderer == "drr" else ()))
    if appearance not in allowed:
        raise PacsnodeError(
            f"unknown appearance {appearance!r} for the {args.renderer} renderer; expected "
            f"one of {allowed}"
        )
    renderer = make_drr_phantom if args.renderer == "drr" else make_phantom
    make = functools.partial(renderer, appearance=appearance, size_px=args.size_px)
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
        phantom = make(args.seed, index, args.region)
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
        "renderer": args.renderer,
        "appearance": appearance,
        "size_px": args.size_px,
        "cases": written,
    }
    (out / f"phantoms-seed{args.seed}.json").write_text(json.dumps(manifest, indent=1))
    print(f"wrote {args.n} cases to {out} in {elapsed:.1f} s ({args.n / elapsed:.2f} films/s)")
    return EXIT_OK


def _cmd_train_localiser(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.training.localiser.data import folder_set, phantom_set
    from pacsnode.training.localiser.train import TrainConfig, train_localiser

    def films(it, total):
        return tqdm(
            it, total=total, desc="phantoms", unit="film", disable=args.quiet, file=sys.stderr
        )

    if args.data == "phantoms":
        if args.train_seed == args.val_seed:
            raise PacsnodeError("--train-seed and --val-seed must differ")
        common = {
            "size": args.size,
            "render_px": args.render_px,
            "workers": args.workers,
            "progress": films,
            "appearance": args.appearance,
        }
        train = phantom_set(args.train_seed, args.n_train, **common)
        val = phantom_set(args.val_seed, args.n_val, **common)
        data = {
            "source": "phantoms",
            "train_seed": args.train_seed,
            "n_train": args.n_train,
            "val_seed": args.val_seed,
            "n_val": args.n_val,
            "render_px": args.render_px,
            "appearance": args.appearance,
        }
    else:
        folder = Path(args.data)
        if args.val_data is None:
            raise PacsnodeError("--data DIR needs --val-data DIR2 (films not used to train)")
        train, val = folder_set(folder, size=args.size), folder_set(args.val_data, size=args.size)
        overlap = set(train.names) & set(val.names)
        if overlap:
            raise PacsnodeError(f"films in both training and validation: {sorted(overlap)[:5]}")
        data = {
            "source": "folder",
            "train": str(folder.resolve()),
            "n_train": len(train),
            "val": str(args.val_data.resolve()),
            "n_val": len(val),
        }
    cfg = TrainConfig(
        arch=args.arch,
        region_aware=args.region_aware,
        region_weight=args.region_weight,
        width=args.width,
        depth=args.depth,
        size=args.size,
        data=data,
        **run_options(args),
    )
    result = train_localiser(
        cfg, train, val, resume=args.resume, progress=batch_bar(args.quiet, leave=False)
    )
    print(
        f"wrote {result.weights} (best epoch {result.best_epoch}, validation Dice "
        f"{result.best_val_dice:.4f}, {result.seconds:.0f} s of training)"
    )
    return EXIT_OK


def _load_localisers(paths: Sequence[Path]) -> tuple[dict, dict]:
    from pacsnode.analysis.localise import Localiser

    models, where = {}, {}
    for p in paths:
        path = p / "localiser.safetensors" if p.is_dir() else p
        loc = Localiser.load(path)
        name = loc.manifest.get("name", path.stem)
        if name in models:
            raise PacsnodeError(f"two models are both named {name!r}: {where[name]} and {path}")
        models[name], where[name] = loc, path
    return models, where


def _cmd_calibrate_localiser(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.training.localiser.evaluate import (
        calibrate_thresholds,
        folder_films,
        phantom_films,
    )

    models, paths = _load_localisers(args.models)
    if args.data == "phantoms":
        seeds = {
            m.manifest.get("training", {}).get("data", {}).get("val_seed") for m in models.values()
        }
        if len(seeds) != 1 or None in seeds:
            raise PacsnodeError(f"the models do not share one phantom validation seed: {seeds}")
        seed = seeds.pop()
        films = phantom_films(seed, args.n, workers=args.workers)
        total, source = args.n, f"phantoms seed {seed}, cases 0-{args.n - 1}, detector resolution"
    else:
        films = folder_films(Path(args.data))
        total, source = None, str(Path(args.data).resolve())
    bar = tqdm(
        films,
        total=total,
        desc="validation films",
        unit="film",
        disable=args.quiet,
        file=sys.stderr,
    )
    chosen = calibrate_thresholds(models, bar)
    for name, result in chosen.items():
        manifest = dict(models[name].manifest)
        manifest["threshold"] = result["threshold"]
        manifest["calibration"] = {"data": source, **result}
        path = paths[name].with_suffix(".json")
        path.write_text(json.dumps(manifest, indent=1))
        best = next(s for s in result["sweep"] if s["threshold"] == result["threshold"])
        print(
            f"{name}: threshold {result['threshold']:.2f} (validation sensitivity "
            f"{100 * best['sensitivity']:.1f} %, specificity {100 * best['specificity']:.1f} %)"
            f" -> {path}"
        )
    return EXIT_OK


def _cmd_evaluate_localiser(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pacsnode.training.localiser.evaluate import (
        dump,
        evaluate_localisers,
        folder_films,
        markdown_table,
        phantom_films,
    )

    models, paths = _load_localisers(args.models)
    for name, loc in models.items():
        data = loc.manifest.get("training", {}).get("data", {})
        if args.data == "phantoms" and args.test_seed in (
            data.get("train_seed"),
            data.get("val_seed"),
        ):
            raise PacsnodeError(
                f"{paths[name]} was trained or validated on phantom seed {args.test_seed}; "
                "choose a held-out --test-seed"
            )
    if args.data == "phantoms":
        films = phantom_films(args.test_seed, args.n_test, workers=args.workers)
        total, source = (
            args.n_test,
            {"source": "phantoms", "test_seed": args.test_seed, "n_test": args.n_test},
        )
    else:
        films = folder_films(Path(args.data))
        total, source = None, {"source": "folder", "test": str(Path(args.data).resolve())}

    def bar(it):
        return tqdm(
            it, total=total, desc="test films", unit="film", disable=args.quiet, file=sys.stderr
        )

    results = evaluate_localisers(models, films, progress=bar)
    results["data"] = source
    results["models"] = {
        n: {
            "file": str(paths[n]),
            "sha256": m.manifest.get("sha256"),
            "parameters": m.manifest.get("parameters"),
            "network": m.manifest.get("network"),
        }
        for n, m in models.items()
    }
    order = [f"{a}{r}" for a in ("fcn", "deconvnet", "unet") for r in ("", "-r")]
    order += [n for n in models if n not in order]
    table = markdown_table(results, order)
    dump(results, args.out.with_suffix(".json"))
    args.out.with_suffix(".md").write_text(table)
    print(table)
    if args.record:
        _record_evaluation(results, models, paths, source, args.regression_n)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")
    return EXIT_OK


def _record_evaluation(results, models, paths, source, regression_n) -> None:
    import numpy as np

    for name, loc in models.items():
        manifest = dict(loc.manifest)
        summary = results["summary"][name]
        first = results["films"][:regression_n]
        regression = {
            key: float(np.mean([f["models"][name][lvl][met] for f in first]))
            for key, (lvl, met) in {
                "node_sensitivity": ("node", "sensitivity"),
                "node_specificity": ("node", "specificity"),
                "lowres_dice": ("lowres", "dice"),
            }.items()
        }
        manifest["evaluation"] = {
            **source,
            "figures": summary,
            "regression": {
                **{k: v for k, v in source.items() if k != "n_test"},
                "start": 0,
                "n": len(first),
                **regression,
            },
        }
        path = paths[name].with_suffix(".json")
        path.write_text(json.dumps(manifest, indent=1))
        print(f"recorded the figures in {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except PacsnodeError as exc:
        print(f"pacsnode {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"pacsnode {args.command}: interrupted", file=sys.stderr)
        return 130
