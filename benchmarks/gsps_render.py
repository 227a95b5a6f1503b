"""The GSPS as a viewer shows it: a phantom film analysed by the shipped stack, its
presentation state applied by dcmtk's ``dcmp2pgm`` (an independent implementation of the
GSPS grayscale pipeline: VOI window, presentation LUT, displayed area), and the graphic
and text objects read back from the stored GSPS drawn over that in their layers' colours
(``dcmp2pgm`` renders pixels only; drawing the graphics is a viewer's part), written as a
PNG for the docs. dcmtk's own count of the objects it parsed in each layer is printed.

With ``--with-capture`` it also writes the burned-in Secondary Capture's picture, so the two
renderings of the same marks can be compared. The film is a cervical phantom of a
docs-only seed.

Usage: python benchmarks/gsps_render.py [--out docs/images] [--max-side 800]
           [--seed 900_015] [--region cervical] [--keep DIR] [--with-capture]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.export.results import algorithm_of, build_results
from pacsnode.imaging.reader import read_film
from pacsnode.training.phantom import make_phantom, write_phantom
from pacsnode.worker.analyst import describe, reading_hints

SEED = 900_015  # a docs-only seed, used for nothing else


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--max-side", type=int, default=800, help="longest side of the PNGs")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--region", default="cervical")
    parser.add_argument("--keep", type=Path, help="also keep the film, pr.dcm and sc.dcm here")
    parser.add_argument(
        "--with-capture", action="store_true", help="also write the burned-in capture's PNG"
    )
    args = parser.parse_args()
    dcmp2pgm = shutil.which("dcmp2pgm")
    if dcmp2pgm is None:
        raise SystemExit("dcmp2pgm not found: apt install dcmtk")

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        film_path = write_phantom(make_phantom(args.seed, 0, args.region), work, preview=False)[
            "dicom"
        ]
        data = film_path.read_bytes()
        film = read_film(data)
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        stack = Stack.load(DEFAULT_MODELS_DIR)
        started = time.perf_counter()
        result = stack.read(film.image, **reading_hints(header, film))
        if result.reading is None:
            raise SystemExit("the stack found no spine on the phantom: try another --seed")
        objects = build_results(
            header,
            film,
            result.localisation,
            algorithm_of(stack.localiser.manifest),
            result.reading,
            secondary_capture=True,
        )
        built = time.perf_counter() - started
        pr, sc = work / "pr.dcm", work / "sc.dcm"
        objects.gsps.save_as(pr, enforce_file_format=True)
        assert objects.sc is not None
        objects.sc.save_as(sc, enforce_file_format=True)
        # dcmp2pgm decodes no JPEG 2000: give it the film uncompressed, UIDs unchanged.
        plain = pydicom.dcmread(film_path)
        plain.decompress(generate_instance_uid=False)
        uncompressed = work / "film.dcm"
        plain.save_as(uncompressed, enforce_file_format=True)
        pgm = work / "rendered.pgm"
        subprocess.run(
            [dcmp2pgm, "--pstate", str(pr), str(uncompressed), str(pgm)], check=True, timeout=120
        )
        counts = _dcmtk_objects(dcmp2pgm, pr, uncompressed)
        args.out.mkdir(parents=True, exist_ok=True)
        written = []
        pictures = [("gsps_dcmp2pgm.png", draw_annotations(Image.open(pgm), pydicom.dcmread(pr)))]
        if args.with_capture:
            pictures.append(
                ("sc_burned_in.png", Image.fromarray(np.asarray(objects.sc.pixel_array)))
            )
        for name, picture in pictures:
            picture.thumbnail((args.max_side, args.max_side), Image.Resampling.LANCZOS)
            target = args.out / name
            # A palette keeps the docs' pictures small; grey film and a few colours fit it.
            picture.quantize(colors=256, dither=Image.Dither.NONE).save(
                target, format="PNG", optimize=True
            )
            written.append(f"{target} ({target.stat().st_size // 1024} KB)")
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in (uncompressed, pr, sc):
                shutil.copy(path, args.keep / path.name)
    print(f"film {film.rows} x {film.columns}: {describe(result.reading)}")
    print(f"stack and result objects: {built:.2f} s; wrote {', '.join(written)}")
    print("dcmtk reads the layers as: " + "; ".join(counts))


def _dcmtk_objects(dcmp2pgm: str, pr: Path, film: Path) -> list[str]:
    """What dcmtk parsed of each graphic layer (its verbose dump): a check, independent of
    highdicom and pydicom, that every object refers to the film."""
    dump = subprocess.run(
        [dcmp2pgm, "-v", "--pstate", str(pr), str(film), str(pr.with_suffix(".check.pgm"))],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    counts, layer, texts = [], "", 0
    for line in (dump.stdout + dump.stderr).splitlines():
        line = line.removeprefix("I:").strip()
        if line.startswith("Graphic Layer #"):
            layer = line.split("[", 1)[1].rstrip("]")
        elif line.startswith("Number of text objects:"):
            texts = int(line.rsplit(":", 1)[1])
        elif line.startswith("Number of graphic objects:"):
            counts.append(f"{layer} {int(line.rsplit(':', 1)[1])} graphics, {texts} texts")
    return counts


def draw_annotations(rendered: Image.Image, pr: pydicom.Dataset) -> Image.Image:
    """The GSPS's graphic and text objects, as stored, drawn over dcmp2pgm's rendering of
    the film (dcmp2pgm applies the grayscale pipeline; graphics are a viewer's to draw).
    Each layer in its recommended colour; PIXEL units, (column, row) from the image's
    top-left corner."""
    picture = rendered.convert("RGB")
    draw = ImageDraw.Draw(picture)
    colours = {
        item.GraphicLayer: hd.color.CIELabColor.from_dicom_value(
            item.GraphicLayerRecommendedDisplayCIELabValue
        ).to_rgb()
        for item in pr.GraphicLayerSequence
    }
    width = max(1, round(max(picture.size) / 500))
    for annotation in pr.GraphicAnnotationSequence:
        colour = tuple(int(c) for c in colours[annotation.GraphicLayer])
        for graphic in annotation.get("GraphicObjectSequence", []):
            points = np.reshape(np.asarray(graphic.GraphicData, float), (-1, 2))
            draw.line([tuple(p) for p in points], fill=colour, width=width)
        for text in annotation.get("TextObjectSequence", []):
            left, top = text.BoundingBoxTopLeftHandCorner
            _, bottom = text.BoundingBoxBottomRightHandCorner
            font = ImageFont.load_default(size=max(8.0, float(bottom - top)))
            draw.text((left, top), text.UnformattedTextValue, fill=colour, font=font)
    return picture


if __name__ == "__main__":
    main()
